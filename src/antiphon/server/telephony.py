"""The other carriers' routes: ``/telnyx``, ``/plivo``, ``/vonage`` and ``/exotel``.

One table (:data:`CARRIERS`) says, for each carrier, its dialect, how its answer webhook
is signed and what the webhook answers (TeXML, Plivo XML, an NCCO); one pair of
handlers serves them all, as ``/twilio/voice`` and ``/twilio/media`` serve Twilio:

- ``POST /<carrier>/voice`` (Vonage: ``GET`` too) checks the carrier's signature with
  the secret in :class:`CarrierSecrets` (403 and one line if it is wrong), issues a
  single-use ticket and answers with the document that connects the call to
  ``wss://<public url>/<carrier>/media?ticket=...``. Without a secret, the server's
  token (when set) is checked and passed on the same way. A form body is parsed once,
  for the signature check (which also reads the raw body) and the answer's fields.
- ``/<carrier>/media`` (WebSocket) admits a stream that redeems its ticket (or carries
  the token); Exotel, which has no webhook, authenticates the handshake with HTTP Basic
  credentials instead. The stream is read up to its start under the connection's guard,
  then :class:`~antiphon.transports.twilio.TwilioBridge` runs the call in the carrier's
  dialect.

Twilio's own routes (``/twilio/voice``, ``/twilio/media``, ``/twilio/amd``,
``/twilio/whisper``) and :func:`~antiphon.server.twilio.serve_media_stream`, which runs
the media streams of both families, live in :mod:`antiphon.server.twilio`;
``add_twilio_amd_route``, ``add_twilio_whisper_route`` and ``read_until_start`` are
re-exported here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse

from antiphon.aio.clock import Clock
from antiphon.errors import ConfigError
from antiphon.protocols import bounded_json, exotel, plivo, telnyx, vonage
from antiphon.protocols import twilio as tw
from antiphon.protocols.media_stream import Dialect
from antiphon.server.agents import AgentFactory
from antiphon.server.edge import TicketBook, ticket_key, token_ok
from antiphon.server.twilio import (
    Watched,
    add_twilio_amd_route,
    add_twilio_whisper_route,
    public_address,
    read_until_start,
    read_webhook_body,
    serve_media_stream,
    ws_scheme,
)
from antiphon.transports.base import CallBridge
from antiphon.transports.limits import EdgeLimits

__all__ = [
    "CARRIERS", "Carrier", "CarrierSecrets", "add_carrier_routes", "add_twilio_amd_route",
    "add_twilio_whisper_route", "read_until_start",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class CarrierSecrets:
    """What proves a request comes from each carrier (None: that carrier is not checked).

    ``telnyx_public_key``: the account's Ed25519 public key (base64);
    ``plivo_auth_token``: the auth token; ``vonage_signature_secret``: the signature
    secret of signed webhooks; ``exotel_credentials``: ``KEY:TOKEN`` of the Voicebot
    applet's ``wss://KEY:TOKEN@host/exotel/media`` URL. ``ticket_secret`` signs the media
    streams' tickets (``ANTIPHON_TICKET_SECRET``, the same in every process of a
    deployment; None: a key derived from the carriers' secrets, see :meth:`ticket_key`).
    """

    telnyx_public_key: str | None = None
    plivo_auth_token: str | None = None
    vonage_signature_secret: str | None = None
    exotel_credentials: str | None = None
    ticket_secret: str | None = None

    @classmethod
    def from_env(cls) -> CarrierSecrets:
        """From ``TELNYX_PUBLIC_KEY``, ``PLIVO_AUTH_TOKEN``, ``VONAGE_SIGNATURE_SECRET``,
        ``EXOTEL_STREAM_CREDENTIALS``, ``ANTIPHON_TICKET_SECRET``."""
        return cls(
            telnyx_public_key=os.environ.get("TELNYX_PUBLIC_KEY") or None,
            plivo_auth_token=os.environ.get("PLIVO_AUTH_TOKEN") or None,
            vonage_signature_secret=os.environ.get("VONAGE_SIGNATURE_SECRET") or None,
            exotel_credentials=os.environ.get("EXOTEL_STREAM_CREDENTIALS") or None,
            ticket_secret=os.environ.get("ANTIPHON_TICKET_SECRET") or None,
        )

    def ticket_key(self, twilio_auth_token: str | None = None) -> bytes:
        """The key of the media streams' tickets (:func:`~antiphon.server.edge.ticket_key`).

        From ``ticket_secret``, else from the shared secrets (Twilio's and Plivo's auth
        tokens, Vonage's signature secret; not Telnyx's key, which is public), else random:
        then a ticket is good only in the process that issued it.
        """
        return ticket_key(
            self.ticket_secret,
            twilio_auth_token,
            self.plivo_auth_token,
            self.vonage_signature_secret,
        )

    def check(self) -> None:
        """Refuse empty secrets, a malformed Exotel pair, or Telnyx's without Ed25519.

        Raises:
            ConfigError: with what to fix.
        """
        for name, value in (
            ("Telnyx public key", self.telnyx_public_key),
            ("Plivo auth token", self.plivo_auth_token),
            ("Vonage signature secret", self.vonage_signature_secret),
            ("Exotel credentials", self.exotel_credentials),
        ):
            if value is not None and not value.strip():
                raise ConfigError(f"the {name} is empty: give it, or leave it unset")
        if self.ticket_secret is not None and len(self.ticket_secret.strip()) < 16:
            raise ConfigError(
                "the ticket secret (ANTIPHON_TICKET_SECRET) has at least 16 characters: "
                "e.g. openssl rand -hex 32"
            )
        if self.exotel_credentials is not None and ":" not in self.exotel_credentials:
            raise ConfigError("the Exotel credentials are KEY:TOKEN (the applet's wss:// URL)")
        if self.telnyx_public_key is not None and not telnyx.ed25519_available():
            raise ConfigError(
                "checking Telnyx signatures needs Ed25519: pip install 'antiphon[telephony]'"
            )


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """What a signature check reads of an answer webhook."""

    method: str
    url: str  # the public URL the carrier requested, query included
    headers: Any  # case-insensitive
    body: bytes
    form: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Carrier:
    """One row of the table: a carrier's dialect, webhook check and answer."""

    name: str
    dialect: Dialect
    secret: Callable[[CarrierSecrets], str | None]
    verify: Callable[[str, WebhookRequest], bool] | None  # None: no webhook
    #: the webhook's answer, given the stream's URL and the webhook's fields (query, form)
    answer: Callable[[str, Mapping[str, str]], Response] | None
    methods: tuple[str, ...] = ("POST",)


def _form(ctype: str, body: bytes) -> list[tuple[str, str]] | None:
    """A form body's fields ([] for another body); None for more fields than a webhook has."""
    if not ctype.endswith("x-www-form-urlencoded"):
        return []
    try:
        return tw.parse_form(body)
    except ValueError:
        return None


def _fields(
    query: Mapping[str, str], ctype: str, body: bytes, form: list[tuple[str, str]] | None
) -> dict[str, str]:
    """The answer webhook's fields: its query, and the form (parsed once, by the handler:
    ``form``) or a flat JSON body's strings. A malformed body adds none."""
    fields = dict(query)
    if ctype.endswith("x-www-form-urlencoded"):
        fields.update(form or [])
    elif ctype.endswith("json") and body:
        try:
            obj = bounded_json.loads(body, max_depth=4)
        except ValueError:
            return fields
        if isinstance(obj, dict):
            fields.update({k: v for k, v in obj.items() if isinstance(v, str)})
    return fields


def _telnyx_ok(key: str, r: WebhookRequest) -> bool:
    return telnyx.verify_signature(
        key,
        r.body,
        r.headers.get("telnyx-signature-ed25519"),
        r.headers.get("telnyx-timestamp"),
        now=time.time(),
    )


def _plivo_ok(token: str, r: WebhookRequest) -> bool:
    nonce, signature = (
        r.headers.get("x-plivo-signature-v3-nonce"),
        r.headers.get("x-plivo-signature-v3"),
    )
    return plivo.validate_signature(token, r.method, r.url, nonce, signature, r.form)


def _vonage_ok(secret: str, r: WebhookRequest) -> bool:
    return vonage.verify_jwt(secret, r.headers.get("authorization"), r.body, now=time.time())


CARRIERS: tuple[Carrier, ...] = (
    Carrier(
        "telnyx", telnyx.DIALECT, lambda s: s.telnyx_public_key, _telnyx_ok,
        lambda url, _: Response(telnyx.texml_connect(url), media_type="text/xml"),
    ),
    Carrier(
        "plivo", plivo.DIALECT, lambda s: s.plivo_auth_token, _plivo_ok,
        lambda url, _: Response(plivo.stream_xml(url), media_type="application/xml"),
    ),
    Carrier(
        "vonage", vonage.DIALECT, lambda s: s.vonage_signature_secret, _vonage_ok,
        lambda url, f: JSONResponse(vonage.ncco_connect(url, number=f.get("to"))),
        methods=("GET", "POST"),
    ),
    Carrier(
        "exotel", exotel.DIALECT, lambda s: s.exotel_credentials, None, None,
    ),
)  # fmt: skip
"""The carriers served besides Twilio, by name."""


def add_carrier_routes(
    app: FastAPI,
    *,
    agent: AgentFactory,
    secrets: CarrierSecrets,
    token: str | None,
    public_url: str | None,
    limits: EdgeLimits,
    clock: Clock,
    tickets: TicketBook,
    watched: Watched,
    run_call: Callable[[CallBridge[Any]], Awaitable[None]],
    record_dir: str | os.PathLike[str] | None = None,
) -> None:
    """Serve every carrier of :data:`CARRIERS` (see the module docstring); with
    ``record_dir``, each call is recorded there (``<carrier>-<time>-<id>.wav``)."""
    secrets.check()
    for carrier in CARRIERS:
        if carrier.answer is not None:
            app.add_api_route(
                f"/{carrier.name}/voice",
                _voice_handler(carrier, secrets, token, limits, tickets, public_url),
                methods=list(carrier.methods),
            )
        app.add_api_websocket_route(
            f"/{carrier.name}/media",
            _media_handler(
                carrier,
                secrets,
                token,
                limits,
                clock,
                tickets,
                agent,
                watched,
                run_call,
                record_dir,
            ),
        )


def _voice_handler(
    carrier: Carrier,
    secrets: CarrierSecrets,
    token: str | None,
    limits: EdgeLimits,
    tickets: TicketBook,
    public_url: str | None,
) -> Callable[[Request], Awaitable[Response]]:
    secret = carrier.secret(secrets)
    name = carrier.name
    title = name.capitalize()

    async def voice(request: Request) -> Response:
        body = await read_webhook_body(request, limits)
        if isinstance(body, Response):
            return body
        base = f"{request.url.scheme}://{request.url.netloc}"
        ws_url = ws_scheme(public_address(public_url, base, f"/{name}/media"))
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        form = _form(ctype, body)  # once: for the signature and for the answer's fields
        if secret is not None and carrier.verify is not None:
            if form is None:
                return PlainTextResponse("too many form fields", status_code=413)
            url = public_address(public_url, base, f"/{name}/voice", request.url.query)
            signed = WebhookRequest(request.method, url, request.headers, body, form)
            if not carrier.verify(secret, signed):
                return PlainTextResponse(f"invalid {title} signature", status_code=403)
            ws_url += f"?ticket={tickets.issue(name)}"  # the stream's single-use pass
        elif token is not None:
            if not token_ok(
                token, request.query_params.get("token"), request.headers.get("authorization")
            ):
                return PlainTextResponse("missing or wrong token", status_code=401)
            ws_url += f"?token={token}"
        assert carrier.answer is not None  # routed only then
        return carrier.answer(ws_url, _fields(request.query_params, ctype, body, form))

    voice.__name__ = f"{name}_voice"
    return voice


def _media_handler(
    carrier: Carrier,
    secrets: CarrierSecrets,
    token: str | None,
    limits: EdgeLimits,
    clock: Clock,
    tickets: TicketBook,
    agent: AgentFactory,
    watched: Watched,
    run_call: Callable[[CallBridge[Any]], Awaitable[None]],
    record_dir: str | os.PathLike[str] | None = None,
) -> Callable[[WebSocket], Awaitable[None]]:
    secret = carrier.secret(secrets)
    name = carrier.name

    def refusal(ws: WebSocket) -> str | None:
        """Why the stream is not admitted (None: it is)."""
        if secret is not None and carrier.verify is None:  # Exotel: HTTP Basic
            if not exotel.basic_auth_ok(secret, ws.headers.get("authorization")):
                return f"invalid {name.capitalize()} credentials"
        elif secret is not None:
            if not tickets.redeem(ws.query_params.get("ticket"), name):
                return f"no valid ticket: calls come via /{name}/voice"
        elif token is not None and not token_ok(
            token, ws.query_params.get("token"), ws.headers.get("authorization")
        ):
            return "missing or wrong token"
        return None

    async def media(ws: WebSocket) -> None:
        await serve_media_stream(
            ws,
            refusal=refusal(ws),
            dialect=carrier.dialect,
            limits=limits,
            clock=clock,
            agent=agent,
            watched=watched,
            run_call=run_call,
            record_dir=record_dir,
        )

    media.__name__ = f"{name}_media"
    return media
