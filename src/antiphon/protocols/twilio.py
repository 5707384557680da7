"""Twilio Media Streams, sans I/O: the WebSocket messages of a bidirectional stream.

Sources: https://www.twilio.com/docs/voice/media-streams/websocket-messages (messages),
https://www.twilio.com/docs/voice/twiml/stream (``<Connect><Stream>``),
https://www.twilio.com/docs/usage/security#validating-requests (request signatures).

Twilio sends ``connected``, then ``start`` (``streamSid``, ``callSid``, the media format:
``audio/x-mulaw`` at 8000 Hz mono, custom parameters), then ``media`` (base64 μ-law,
20 ms each, with ``chunk`` and ``timestamp`` in ms), ``dtmf``, ``mark`` (a name we sent,
echoed when the audio before it has played, or dropped by ``clear``) and finally
``stop``. We send ``media`` (base64 μ-law 8 kHz), ``mark`` and ``clear`` (drop the audio
Twilio has buffered, for barge-in), each with the ``streamSid``.

The events, the stream's state and the JSON reading and writing are shared with the
carriers that copy this protocol (:mod:`antiphon.protocols.media_stream`); this module
keeps what is Twilio's own: its spelling (:data:`DIALECT`), TwiML and request signatures.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qs, parse_qsl, urlparse
from xml.sax.saxutils import quoteattr

from antiphon.protocols.media_stream import (
    MAX_DEPTH,
    Connected,
    Dtmf,
    JsonDialect,
    JsonSpelling,
    Malformed,
    Mark,
    Media,
    MediaEvent,
    ProtocolViolation,
    Start,
    Stop,
    StreamState,
    Unknown,
)

__all__ = [
    "DIALECT", "FRAME_BYTES", "HMAC_SHA1", "HMAC_SHA256", "MAX_DEPTH", "SAMPLE_RATE", "Connected",
    "Dtmf", "Malformed", "Mark", "Media", "Params", "ProtocolViolation", "Start", "Stop",
    "StreamState", "TwilioEvent", "Unknown", "body_sha256", "compute_signature", "encode_clear",
    "encode_mark", "encode_media", "parse", "parse_form", "signature_algorithm", "twiml_connect",
    "url_variants", "validate_signature",
]  # fmt: skip

SAMPLE_RATE = 8000
FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz


TwilioEvent = MediaEvent

DIALECT = JsonDialect("twilio", JsonSpelling())
"""Twilio's spelling of a media stream: the reference the other carriers copy."""


def parse(text: str, *, max_depth: int = MAX_DEPTH) -> TwilioEvent:
    """One message from Twilio → a typed event (``Malformed`` for anything invalid)."""
    return DIALECT.parse(text, max_depth=max_depth)


def encode_media(stream_sid: str, ulaw: bytes) -> str:
    return DIALECT.encode_media(stream_sid, ulaw)


def encode_mark(stream_sid: str, name: str) -> str:
    return DIALECT.encode_mark(stream_sid, name)


def encode_clear(stream_sid: str) -> str:
    return DIALECT.encode_clear(stream_sid)


def twiml_connect(ws_url: str, parameters: Mapping[str, str] | None = None) -> str:
    """TwiML that connects a call to a bidirectional stream at ``ws_url`` (wss://...)."""
    params = "".join(
        f"<Parameter name={quoteattr(k)} value={quoteattr(v)}/>"
        for k, v in (parameters or {}).items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Connect><Stream url={quoteattr(ws_url)}>{params}</Stream>"
        "</Connect></Response>"
    )


# ------------------------------------------------------------------ request signatures
#
# As Twilio computes them (the official library's RequestValidator is the witness, see
# tests/test_twilio.py): the full URL Twilio requested, query string included, then each
# POST parameter's name and value, names sorted, and for a name sent several times each
# distinct value, sorted; blank values count. Twilio is inconsistent about the default
# port, so the URL is tried with it and without it. A JSON body is signed through the URL:
# its query carries ``bodySHA256`` (hex SHA-256 of the body) and no parameters are
# signed. HMAC-SHA1 keyed with the auth token, unless the request's
# ``X-Twilio-Webhooks-Signature-Settings`` names ``algorithm=HMAC_SHA256``.

HMAC_SHA1 = "HMAC_SHA1"
HMAC_SHA256 = "HMAC_SHA256"
_HASHES = {HMAC_SHA1: hashlib.sha1, HMAC_SHA256: hashlib.sha256}

Params = Mapping[str, str] | Iterable[tuple[str, str]]
"""POST parameters: a mapping, or (name, value) pairs in which a name may repeat."""


def parse_form(body: bytes, *, max_fields: int = 1000) -> list[tuple[str, str]]:
    """An ``application/x-www-form-urlencoded`` body as (name, value) pairs, blanks kept.

    Raises:
        ValueError: more than ``max_fields`` fields.
    """
    text = body.decode("utf-8", "replace")
    return parse_qsl(text, keep_blank_values=True, max_num_fields=max_fields)


def _pairs(params: Params) -> Iterable[tuple[str, str]]:
    if isinstance(params, Mapping):
        return params.items()
    return params


def signature_algorithm(settings_header: str | None) -> str:
    """The algorithm an ``X-Twilio-Webhooks-Signature-Settings`` header names (SHA1 if none)."""
    for part in (settings_header or "").split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() == "algorithm" and value.strip():
            return value.strip().upper()
    return HMAC_SHA1


def compute_signature(
    auth_token: str, url: str, params: Params = (), *, algorithm: str = HMAC_SHA1
) -> str:
    """Twilio's ``X-Twilio-Signature`` for a request to exactly ``url`` with ``params``.

    Raises:
        ValueError: an algorithm other than HMAC_SHA1 or HMAC_SHA256.
    """
    digestmod = _HASHES.get(algorithm.upper())
    if digestmod is None:
        raise ValueError(f"unsupported signature algorithm {algorithm!r}")
    values: dict[str, set[str]] = {}
    for name, value in _pairs(params):
        values.setdefault(name, set()).add(value)
    data = url + "".join(name + v for name in sorted(values) for v in sorted(values[name]))
    digest = hmac.new(auth_token.encode(), data.encode(), digestmod).digest()
    return base64.b64encode(digest).decode()


def url_variants(url: str) -> tuple[str, ...]:
    """The spellings of ``url`` Twilio may have signed: without its port, and with it.

    A URL naming a port is also tried without it; one without a port is tried with the
    default port (443 for https and wss, 80 for http and ws; the official library adds
    80 to wss, so that is tried too).
    """
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:
        return (url,)
    if port:
        return parsed._replace(netloc=parsed.netloc.split(":")[0]).geturl(), parsed.geturl()
    ports = {443} if parsed.scheme == "https" else {80}
    ports.add(443 if parsed.scheme in ("https", "wss") else 80)
    with_ports = (parsed._replace(netloc=f"{parsed.netloc}:{p}").geturl() for p in sorted(ports))
    return (parsed.geturl(), *with_ports)


def body_sha256(body: bytes) -> str:
    """The ``bodySHA256`` of a JSON body: hex SHA-256."""
    return hashlib.sha256(body).hexdigest()


def validate_signature(
    auth_token: str,
    url: str,
    params: Params,
    signature: str,
    *,
    body: bytes | None = None,
    algorithm: str = HMAC_SHA1,
) -> bool:
    """Whether ``signature`` is Twilio's for this request (constant-time comparisons).

    ``url`` is the full URL Twilio requested (query included). For a JSON body, pass
    ``body``: when the URL's query has ``bodySHA256``, the body must hash to it and the
    parameters are not signed.
    """
    if algorithm.upper() not in _HASHES:
        return False
    body_ok = True
    query = parse_qs(urlparse(url).query)
    if body is not None and "bodySHA256" in query:
        body_ok = hmac.compare_digest(body_sha256(body), query["bodySHA256"][0])
        params = ()
    given = signature.encode()
    ok = False
    for variant in url_variants(url):
        expected = compute_signature(auth_token, variant, params, algorithm=algorithm).encode()
        ok |= hmac.compare_digest(expected, given)
    return body_ok and ok
