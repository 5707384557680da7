"""Vonage Voice WebSockets, sans I/O: its dialect of a media stream, NCCO, signed webhooks.

Sources: https://developer.vonage.com/en/voice/voice-api/concepts/websockets (the
connection, audio frames, ``websocket:dtmf``, the ``clear`` and ``notify`` actions),
https://developer.vonage.com/en/voice/voice-api/ncco-reference#connect (the NCCO),
https://developer.vonage.com/en/getting-started/concepts/webhooks#decoding-signed-webhooks
(signed webhooks).

Vonage differs from the Media Streams family: its first message is JSON text,
``{"event": "websocket:connected", "content-type": "audio/l16;rate=16000", ...}`` (with
the NCCO's ``headers`` beside it), then the caller's audio comes as binary frames of raw
16-bit little-endian PCM (20 ms: 640 bytes at 16 kHz), and we answer in binary frames of
the same size. Touch-tones come as ``websocket:dtmf``. ``{"action": "clear"}`` drops what
Vonage buffered (answered by ``websocket:cleared``); ``{"action": "notify", "payload":
...}`` is echoed as ``websocket:notify`` once the audio before it has played: our marks.
There is no stop message: the socket closes when the call ends. The connected message is
read as the stream's ``Start`` (the call's ``uuid`` header, when the NCCO sets one, is
its id).

Signed webhooks: ``Authorization: Bearer <JWT>``, HS256 with the account's signature
secret; its ``payload_hash`` claim is the hex SHA-256 of the body. Checked here with the
standard library (the PyJWT package is the witness in the tests).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

from antiphon.protocols import bounded_json
from antiphon.protocols.media_stream import (
    MAX_DEPTH,
    Dialect,
    Dtmf,
    Malformed,
    Mark,
    Media,
    MediaEvent,
    Start,
    Unknown,
)

__all__ = ["DIALECT", "LEEWAY", "VonageDialect", "ncco_connect", "verify_jwt"]

LEEWAY = 300.0
"""Seconds of clock skew allowed on a signed webhook's ``iat``/``exp``."""


class VonageDialect(Dialect):
    """Vonage's WebSocket: binary L16 audio at ``sample_rate``, JSON events beside it."""

    codec = "l16"

    def __init__(self, sample_rate: int = 16000) -> None:
        self.name = "vonage"
        self.sample_rate = sample_rate
        self.formats = frozenset({("audio/l16", sample_rate)})

    @property
    def content_type(self) -> str:
        return f"audio/l16;rate={self.sample_rate}"

    def parse(self, message: str | bytes, *, max_depth: int = MAX_DEPTH) -> MediaEvent:
        if isinstance(message, bytes):
            if len(message) % 2:
                return Malformed("odd-length 16-bit audio frame", repr(message[:40]))
            return Media(message, "inbound", 0, 0)
        try:
            msg = bounded_json.loads(message, max_depth=max_depth)
        except bounded_json.JSONTooDeep as exc:
            return Malformed(str(exc), message[:200])
        except (ValueError, TypeError):
            return Malformed("not JSON", message[:200])
        if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
            return Malformed("no event", message[:200])
        event = msg["event"]
        if event == "websocket:connected":
            kind, _, rate = str(msg.get("content-type", "")).partition(";rate=")
            uuid = str(msg.get("uuid", ""))
            headers = {
                str(k): str(v) for k, v in msg.items() if isinstance(v, str | int) and k != "event"
            }
            return Start(
                stream_sid=uuid, call_sid=uuid, account_sid="", encoding=kind.strip(),
                sample_rate=int(rate) if rate.isdigit() else 0, channels=1,
                tracks=("inbound",), parameters=headers,
            )  # fmt: skip
        if event == "websocket:dtmf":
            digit = msg.get("digit")
            if digit is None and isinstance(msg.get("dtmf"), dict):
                digit = msg["dtmf"].get("digit")
            if not isinstance(digit, str | int):
                return Malformed("websocket:dtmf without a digit", message[:200])
            return Dtmf(str(digit))
        if event == "websocket:notify":
            payload = msg.get("payload")
            if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
                return Unknown(event)  # not one of our marks
            return Mark(payload["name"])
        return Unknown(event)

    def encode_media(self, stream_sid: str, audio: bytes) -> bytes:
        return audio

    def encode_mark(self, stream_sid: str, name: str) -> str:
        return json.dumps({"action": "notify", "payload": {"name": name}})

    def encode_clear(self, stream_sid: str) -> str:
        return json.dumps({"action": "clear"})


DIALECT = VonageDialect()


_NUMBER = re.compile(r"^[1-9]\d{6,14}$")


def ncco_connect(
    ws_url: str, headers: Mapping[str, str] | None = None, *, number: str | None = None
) -> list[dict[str, Any]]:
    """The NCCO that connects the call to our WebSocket at ``ws_url`` (L16 16 kHz).

    A connect action names the number the leg comes from: ``number`` (the Vonage number
    that was called, the answer webhook's ``to``) when it is an E.164 number without
    ``+``, else ``randomFromNumber`` (one of the application's own numbers), as the
    official SDK's ``Connect`` model requires one of the two.
    """
    endpoint: dict[str, Any] = {
        "type": "websocket",
        "uri": ws_url,
        "content-type": DIALECT.content_type,
    }
    if headers:
        endpoint["headers"] = dict(headers)
    action: dict[str, Any] = {"action": "connect", "endpoint": [endpoint]}
    digits = (number or "").strip().lstrip("+")
    if _NUMBER.match(digits):
        action["from"] = digits
    else:
        action["randomFromNumber"] = True
    return [action]


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_jwt(
    secret: str, authorization: str | None, body: bytes, *, now: float, leeway: float = LEEWAY
) -> bool:
    """Whether a webhook's ``Authorization: Bearer`` JWT is Vonage's for this body.

    HS256 keyed with ``secret``; ``exp`` (if any) not passed and ``iat`` (if any) not in
    the future, both within ``leeway``; ``payload_hash`` (if any, required with a body)
    the hex SHA-256 of ``body``.
    """
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or token.count(".") != 2:
        return False
    head, claims_part, sig = token.strip().split(".")
    try:
        header = json.loads(_b64url(head))
        claims = json.loads(_b64url(claims_part))
        given = _b64url(sig)
    except (ValueError, binascii.Error):
        return False
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        return False
    expected = hmac.new(secret.encode(), f"{head}.{claims_part}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, given):
        return False
    exp, iat = claims.get("exp"), claims.get("iat")
    if isinstance(exp, int | float) and now > exp + leeway:
        return False
    if isinstance(iat, int | float) and iat > now + leeway:
        return False
    digest = claims.get("payload_hash")
    if digest is None:
        return not body
    return isinstance(digest, str) and hmac.compare_digest(
        digest.lower(), hashlib.sha256(body).hexdigest()
    )
