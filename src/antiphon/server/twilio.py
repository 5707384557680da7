"""Twilio's routes: the ``/twilio/voice`` webhook, the ``/twilio/media`` stream,
``/twilio/amd`` and ``/twilio/whisper``.

How it is built: each ``add_*`` function adds its routes to the app of
:func:`~antiphon.server.app.create_app`, which passes in what they share with the other
call endpoints (``watched`` runs a connection's deadlines, ``run_call`` admits and runs
a bridge), as :func:`~antiphon.server.telephony.add_carrier_routes` does for the other
carriers, whose streams are Twilio-shaped too: :func:`serve_media_stream` (which reads
up to the start with :func:`read_until_start`) runs the media streams of both. One
check, ``_twilio_signed``, reads Twilio's signature for all three webhooks.

- ``/twilio/voice`` is the answer webhook: with the Twilio auth token it checks Twilio's
  signature over the public URL and the form (a JSON body is signed through
  ``?bodySHA256=``) and issues a single-use ticket; else the server's token, when set,
  is checked. It answers TwiML that connects the call to ``wss://.../twilio/media`` with
  the ticket (or token) as a stream parameter.
- ``/twilio/media`` checks the handshake's signature, then reads the stream up to its
  ``start`` before a session exists (:func:`read_until_start`), so that its
  ``customParameters`` can carry the ticket (the signature can be replayed; the ticket
  cannot) or the token. Only then does a
  :class:`~antiphon.transports.twilio.TwilioBridge` run the call, reading the preface again.

``POST /twilio/amd`` takes Twilio's asynchronous answering-machine verdict on an
outbound call (``antiphon call --machine-detection``), signed like ``/twilio/voice``,
and hands it to the live call with that ``CallSid`` as
:class:`~antiphon.agent.events.MachineDetected`.

``POST /twilio/whisper`` answers a warm transfer's ``<Number url>``
(:meth:`~antiphon.transports.twilio_rest.TwilioCalls.transfer` with a summary): it checks
Twilio's signature, opens the summary's signed, expiring token (``?ticket=``, redacted in
the logs) with the auth token's whisper key, and answers ``<Say>`` of the summary, which
Twilio plays to the human who answered before bridging. It needs the Twilio auth token
(the key and the signature check); without it, or for a bad signature or token, it
refuses with one line.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request, Response, WebSocket
from fastapi.responses import PlainTextResponse

from antiphon.aio.clock import Clock
from antiphon.audio.recording import call_recorder
from antiphon.protocols import twilio as tw
from antiphon.protocols import twilio_rest as rest
from antiphon.protocols.media_stream import Connected, Dialect, Start
from antiphon.server.agents import AgentFactory
from antiphon.server.calls import CallRegistry
from antiphon.server.edge import BodyTooLarge, TicketBook, read_body, token_ok
from antiphon.transports.base import UNAUTHORIZED, CallBridge, CallEnded
from antiphon.transports.limits import ConnectionGuard, EdgeLimits
from antiphon.transports.phone_events import deliver_answered_by
from antiphon.transports.twilio import TwilioBridge
from antiphon.transports.websocket import StarletteSocket

__all__ = [
    "Watched",
    "add_twilio_amd_route",
    "add_twilio_routes",
    "add_twilio_whisper_route",
    "public_address",
    "read_until_start",
    "read_webhook_body",
    "serve_media_stream",
    "ws_scheme",
]


def public_address(public_url: str | None, base: str, path: str, query: str = "") -> str:
    """``path`` (and ``?query``, if any) on the server's public URL, else on ``base`` (the
    request's ``scheme://host``): the address a carrier requests, and signs."""
    url = (public_url or base).rstrip("/") + path
    return f"{url}?{query}" if query else url


def ws_scheme(url: str) -> str:
    """``url`` with ``http(s)://`` made ``ws(s)://`` (where a carrier opens the stream)."""
    return url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)


async def read_until_start(
    guard: ConnectionGuard, dialect: Dialect, limits: EdgeLimits
) -> tuple[Start | None, list[bytes | str]]:
    """A stream's first messages up to its start (``connected`` may come first).

    Returns the start (None if another message came first: the bridge refuses it) and
    the messages read, for the bridge to read again; none if the peer left. Raises
    :class:`CallEnded` when the guard does (size, deadline).
    """
    preface: list[bytes | str] = []
    for _ in range(2):
        message = await guard.receive()
        if message is None:
            return None, []
        preface.append(message)
        event = dialect.parse(message, max_depth=limits.max_json_depth)
        if isinstance(event, Start):
            return event, preface
        if not isinstance(event, Connected):
            break
    return None, preface


Watched = Callable[[ConnectionGuard], AbstractAsyncContextManager[ConnectionGuard]]
"""Runs a connection's deadlines for as long as its block runs."""


async def serve_media_stream(
    ws: WebSocket,
    *,
    refusal: str | None,
    dialect: Dialect,
    limits: EdgeLimits,
    clock: Clock,
    agent: AgentFactory,
    watched: Watched,
    run_call: Callable[[CallBridge[Any]], Awaitable[None]],
    record_dir: str | os.PathLike[str] | None = None,
    start_refusal: Callable[[Start | None], str | None] | None = None,
) -> None:
    """Run one Twilio-shaped media stream, from its handshake to the end of its call.

    The stream is accepted, then closed with ``refusal`` when that is not None. Else it
    is read up to its start (:func:`read_until_start`) under a
    :class:`~antiphon.transports.limits.ConnectionGuard` that ``watched`` runs, and
    ``start_refusal``, given the start, may still refuse it (e.g. a ticket that the
    start's parameters carry). Only then does a
    :class:`~antiphon.transports.twilio.TwilioBridge` in ``dialect`` run the call
    (``run_call``), reading the preface again; with ``record_dir``, the call is recorded
    there (``<dialect name>-<time>-<id>.wav``).
    """
    await ws.accept()
    socket = StarletteSocket(ws)
    if refusal is not None:
        await socket.close(UNAUTHORIZED, refusal)
        return
    guard = ConnectionGuard(
        socket,
        limits,
        max_binary_bytes=limits.max_twilio_message_bytes,
        max_text_bytes=limits.max_twilio_message_bytes,
        clock=clock,
    )
    async with watched(guard):
        try:
            start, preface = await read_until_start(guard, dialect, limits)
        except CallEnded as ended:
            await guard.close(ended.code, ended.reason)
            return
        if not preface:
            return  # gone before saying anything
        why = start_refusal(start) if start_refusal is not None else None
        if why is not None:
            await guard.close(UNAUTHORIZED, why)
            return
        guard.unread(*preface)
        recorder = call_recorder(record_dir, dialect.name) if record_dir is not None else None
        bridge = TwilioBridge(
            agent.new_session(), guard, send_timeout=limits.send_timeout,
            dialect=dialect, recorder=recorder,
        )  # fmt: skip
        guard.on_expire = bridge.end
        await run_call(bridge)


def _twilio_signed(
    request: Request,
    auth_token: str,
    public_url: str | None,
    path: str,
    form: Sequence[tuple[str, str]],
    json_body: bytes | None = None,
) -> bool:
    """Whether a webhook carries Twilio's signature: over the URL Twilio requested (the
    public URL, else the request's, with ``path`` and the query) and the ``form`` (or a
    JSON body, signed through ``?bodySHA256=``), in the algorithm its headers name."""
    base = f"{request.url.scheme}://{request.url.netloc}"
    url = public_address(public_url, base, path, request.url.query)
    signature = request.headers.get("x-twilio-signature")
    algorithm = tw.signature_algorithm(request.headers.get("x-twilio-webhooks-signature-settings"))
    return signature is not None and tw.validate_signature(
        auth_token, url, form, signature, body=json_body, algorithm=algorithm
    )


async def read_webhook_body(request: Request, limits: EdgeLimits) -> bytes | Response:
    """A webhook's body, or the one line that refuses it (too large: 413; too slow: 408)."""
    try:
        return await read_body(request, limits.max_http_body_bytes, limits.http_body_timeout)
    except BodyTooLarge as exc:
        return PlainTextResponse(str(exc), status_code=413)
    except TimeoutError:
        return PlainTextResponse("the request body came too slowly", status_code=408)


async def _read_form(request: Request, limits: EdgeLimits) -> list[tuple[str, str]] | Response:
    """A webhook's form body, or the one line that refuses it (see
    :func:`read_webhook_body`; too many fields: 413)."""
    body = await read_webhook_body(request, limits)
    if isinstance(body, Response):
        return body
    try:
        return tw.parse_form(body)
    except ValueError:
        return PlainTextResponse("too many form fields", status_code=413)


def add_twilio_routes(
    app: FastAPI,
    *,
    agent: AgentFactory,
    token: str | None,
    twilio_auth_token: str | None,
    public_url: str | None,
    limits: EdgeLimits,
    clock: Clock,
    tickets: TicketBook,
    watched: Watched,
    run_call: Callable[[CallBridge[Any]], Awaitable[None]],
    record_dir: str | os.PathLike[str] | None = None,
) -> None:
    """Serve ``/twilio/voice`` and ``/twilio/media`` (see the module docstring).

    Args:
        app: the app to add the routes to.
        agent: makes one session per call.
        token: the server's token (None: none), used when there is no Twilio auth token.
        twilio_auth_token: checks Twilio's signatures (None: not checked).
        public_url: the server's address as Twilio sees it (None: the request's).
        limits: sizes, rates and deadlines of both endpoints.
        clock: the clock of the deadlines.
        tickets: issues and redeems the media streams' single-use tickets.
        watched: runs a connection's deadlines for as long as its block runs.
        run_call: admits a bridge and runs its call to the end.
        record_dir: record each call there (``twilio-<time>-<id>.wav``; None: not).
    """
    lim = limits

    @app.post("/twilio/voice")
    async def twilio_voice(request: Request) -> Response:
        body = await read_webhook_body(request, lim)
        if isinstance(body, Response):
            return body
        base = f"{request.url.scheme}://{request.url.netloc}"
        parameters: dict[str, str] = {}
        if twilio_auth_token is not None:
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            try:
                # Twilio posts a form; a JSON body is signed through ?bodySHA256=
                form = [] if ctype == "application/json" else tw.parse_form(body)
            except ValueError:
                return PlainTextResponse("too many form fields", status_code=413)
            json_body = body if ctype == "application/json" else None
            if not _twilio_signed(
                request, twilio_auth_token, public_url, "/twilio/voice", form, json_body
            ):
                return PlainTextResponse("invalid Twilio signature", status_code=403)
            parameters["ticket"] = tickets.issue("twilio")  # the stream's single-use pass
        elif token is not None:
            if not token_ok(
                token, request.query_params.get("token"), request.headers.get("authorization")
            ):
                return PlainTextResponse("missing or wrong token", status_code=401)
            parameters["token"] = token  # comes back in the stream's start message
        ws_url = ws_scheme(public_address(public_url, base, "/twilio/media"))
        return Response(tw.twiml_connect(ws_url, parameters), media_type="text/xml")

    @app.websocket("/twilio/media")
    async def twilio_media(ws: WebSocket) -> None:
        signed = True
        if twilio_auth_token is not None:
            base = f"{'https' if ws.url.scheme == 'wss' else 'http'}://{ws.url.netloc}"
            url = ws_scheme(public_address(public_url, base, "/twilio/media", ws.url.query))
            signature = ws.headers.get("x-twilio-signature")
            signed = signature is not None and tw.validate_signature(
                twilio_auth_token, url, (), signature
            )

        def refusal(start: Start | None) -> str | None:
            """Why the stream, which began with ``start``, is not admitted (None: it is)."""
            if twilio_auth_token is not None:
                # the signature can be replayed; the ticket /twilio/voice issued cannot
                ticket = start.parameters.get("ticket") if start else None
                if not tickets.redeem(ticket, "twilio"):
                    return "no valid ticket: calls come via /twilio/voice"
            elif token is not None:
                given = start.parameters.get("token") if start else None
                if not token_ok(
                    token,
                    given or ws.query_params.get("token"),
                    ws.headers.get("authorization"),
                ):
                    return "missing or wrong token"
            return None

        await serve_media_stream(
            ws,
            refusal=None if signed else "invalid Twilio signature",
            start_refusal=refusal,
            dialect=tw.DIALECT,
            limits=lim,
            clock=clock,
            agent=agent,
            watched=watched,
            run_call=run_call,
            record_dir=record_dir,
        )


def add_twilio_amd_route(
    app: FastAPI,
    *,
    registry: CallRegistry,
    twilio_auth_token: str | None,
    token: str | None,
    public_url: str | None,
    limits: EdgeLimits,
) -> None:
    """Serve ``POST /twilio/amd`` (see the module docstring)."""

    @app.post("/twilio/amd")
    async def twilio_amd(request: Request) -> Response:
        form = await _read_form(request, limits)
        if isinstance(form, Response):
            return form
        if twilio_auth_token is not None:
            if not _twilio_signed(request, twilio_auth_token, public_url, "/twilio/amd", form):
                return PlainTextResponse("invalid Twilio signature", status_code=403)
        elif token is not None and not token_ok(
            token, request.query_params.get("token"), request.headers.get("authorization")
        ):
            return PlainTextResponse("missing or wrong token", status_code=401)
        fields = dict(form)
        call_sid, answered_by = fields.get("CallSid", ""), fields.get("AnsweredBy", "")
        for call in list(registry.calls):
            if not isinstance(call, TwilioBridge) or call.state.start is None:
                continue
            if call_sid and call.state.start.call_sid == call_sid:
                try:
                    deliver_answered_by(call.session, answered_by)
                except ValueError as exc:
                    return PlainTextResponse(str(exc), status_code=400)
                return Response(status_code=204)
        return PlainTextResponse(f"no live call {call_sid[:40]!r}", status_code=404)


def add_twilio_whisper_route(
    app: FastAPI,
    *,
    twilio_auth_token: str | None,
    public_url: str | None,
    limits: EdgeLimits,
    wall: Callable[[], float] = time.time,
) -> None:
    """Serve ``POST /twilio/whisper`` (see the module docstring)."""
    seal = rest.WhisperSeal(twilio_auth_token, wall=wall) if twilio_auth_token else None

    @app.post("/twilio/whisper")
    async def twilio_whisper(request: Request) -> Response:
        if seal is None or twilio_auth_token is None:
            return PlainTextResponse(
                "warm transfers need the server's Twilio auth token (TWILIO_AUTH_TOKEN)",
                status_code=404,
            )
        form = await _read_form(request, limits)
        if isinstance(form, Response):
            return form
        if not _twilio_signed(request, twilio_auth_token, public_url, "/twilio/whisper", form):
            return PlainTextResponse("invalid Twilio signature", status_code=403)
        summary = seal.open(request.query_params.get("ticket"))
        if summary is None:
            return PlainTextResponse("no valid whisper ticket (forged or expired)", status_code=403)
        return Response(rest.whisper_twiml(summary), media_type="text/xml")
