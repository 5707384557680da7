"""Exotel Voicebot streams, sans I/O: its spelling of a media stream and its authentication.

Sources: https://developer.exotel.com/docs/agentstream/websocket-protocol (the messages),
https://developer.exotel.com/docs/agentstream/stream-voicebot-applet (the applet's URL,
authentication, sample rate), https://support.exotel.com/support/solutions/articles/3000108630-working-with-the-stream-applet
(chunk sizes).

Exotel's Voicebot applet speaks Media Streams in snake case (``stream_sid``, ``call_sid``,
``media_format``, ``custom_parameters``), with 16-bit little-endian PCM (``audio/x-raw``,
8000 Hz; older accounts say ``raw/slin``) as base64 ``media`` payloads. It wants our
audio in chunks of a multiple of 320 bytes and at least 100 ms, so we send 100 ms per
message.

Exotel signs nothing: the applet authenticates with HTTP Basic on the WebSocket
handshake (``wss://KEY:TOKEN@host/path`` is sent as ``Authorization: Basic ...``), or
by IP allow-listing. :func:`basic_auth_ok` checks the header in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from antiphon.protocols.media_stream import JsonDialect, JsonSpelling

__all__ = ["DIALECT", "basic_auth_ok"]

DIALECT = JsonDialect(
    "exotel",
    JsonSpelling(
        stream="stream_sid", call="call_sid", account="account_sid",
        media_format="media_format", sample_rate="sample_rate", parameters="custom_parameters",
        sid_out="stream_sid",
    ),
    codec="l16",
    formats=frozenset({("audio/x-raw", 8000), ("raw/slin", 8000)}),
    frame_seconds=0.1,
)  # fmt: skip


def basic_auth_ok(credentials: str, authorization: str | None) -> bool:
    """Whether an ``Authorization: Basic`` header carries ``credentials`` (``KEY:TOKEN``)."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not value:
        return False
    try:
        given = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, credentials.encode())
