"""Telnyx media streaming, sans I/O: its spelling of a media stream, TeXML, signatures.

Sources: https://developers.telnyx.com/api-reference/websockets/stream-call-media-over-websocket
(the stream's messages), https://developers.telnyx.com/docs/voice/programmable-voice/texml-verbs/stream
(``<Stream>``, ``bidirectionalMode``/``bidirectionalCodec``),
https://developers.telnyx.com/docs/voice/programmable-voice/texml-verbs/connect (``<Connect>``),
https://developers.telnyx.com/docs/development/sdk/python/webhooks (webhook signatures).

Telnyx copies Twilio's Media Streams in snake case: ``connected``, ``start`` (the call's
``call_control_id``, ``media_format`` ``PCMU`` at 8000 Hz), ``media`` (base64 RTP
payloads: μ-law bytes), ``dtmf``, ``mark``, ``stop``, with the stream's ``stream_id`` at the
top level; we send ``media``, ``mark`` and ``clear`` without a stream id. Bidirectional
RTP media needs ``bidirectionalMode="rtp"`` on the ``<Stream>``.

Webhooks are signed with Ed25519: ``telnyx-signature-ed25519`` (base64) over
``f"{telnyx-timestamp}|{raw body}"``, checked with the account's public key (base64, 32
bytes), within a tolerance of the timestamp against replays. Ed25519 needs the
``cryptography`` package (``pip install 'antiphon[telephony]'``). The pages found
document these headers on API v2 webhooks; that TeXML's instruction requests carry them
too is assumed, not seen (docs/telephony.md says what to do if they do not).
"""

from __future__ import annotations

import base64
import binascii
from xml.sax.saxutils import quoteattr

from antiphon.protocols.media_stream import JsonDialect, JsonSpelling

__all__ = ["DIALECT", "TOLERANCE", "ed25519_available", "texml_connect", "verify_signature"]

DIALECT = JsonDialect(
    "telnyx",
    JsonSpelling(
        stream="stream_id", call="call_control_id", account="user_id",
        media_format="media_format", sample_rate="sample_rate", parameters="custom_parameters",
        sid_out=None,
    ),
    formats=frozenset({("PCMU", 8000)}),
)  # fmt: skip

TOLERANCE = 300.0
"""Seconds a signed webhook's ``telnyx-timestamp`` may be off our clock."""


def ed25519_available() -> bool:
    """Whether Ed25519 can be checked here (the ``cryptography`` package is installed)."""
    try:
        import cryptography.hazmat.primitives.asymmetric.ed25519  # noqa: F401
    except ImportError:
        return False
    return True


def verify_signature(
    public_key: str,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    *,
    now: float,
    tolerance: float = TOLERANCE,
) -> bool:
    """Whether ``signature`` is Telnyx's Ed25519 signature of ``timestamp|body``.

    Args:
        public_key: the account's public key, base64 (Mission Control, Keys & Credentials).
        body: the raw request body, as received.
        signature: the ``telnyx-signature-ed25519`` header (base64).
        timestamp: the ``telnyx-timestamp`` header (Unix seconds).
        now: the current Unix time.
        tolerance: how far ``timestamp`` may be from ``now``, in seconds.

    Raises:
        ImportError: the ``cryptography`` package is missing.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not signature or not timestamp or not timestamp.isdigit():
        return False
    if abs(now - int(timestamp)) > tolerance:
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, timestamp.encode() + b"|" + body)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def texml_connect(ws_url: str) -> str:
    """TeXML that connects the call to a bidirectional RTP stream (μ-law) at ``ws_url``."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Connect><Stream url={quoteattr(ws_url)} "
        'bidirectionalMode="rtp" bidirectionalCodec="PCMU"/></Connect></Response>'
    )
