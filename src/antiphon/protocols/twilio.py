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
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import quoteattr

SAMPLE_RATE = 8000
FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    encoding: str
    sample_rate: int
    channels: int
    tracks: tuple[str, ...]
    parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Media:
    payload: bytes  # μ-law bytes
    track: str
    chunk: int
    timestamp: int  # ms since the stream started


@dataclass(frozen=True, slots=True)
class Mark:
    name: str


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class Stop:
    call_sid: str


@dataclass(frozen=True, slots=True)
class Malformed:
    reason: str
    raw: str


@dataclass(frozen=True, slots=True)
class Unknown:
    event: str


TwilioEvent = Connected | Start | Media | Mark | Dtmf | Stop | Malformed | Unknown


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else 0


def parse(text: str) -> TwilioEvent:
    """One message from Twilio → a typed event (``Malformed`` for anything invalid)."""
    try:
        msg = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return Malformed("not JSON", str(text)[:200])
    if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
        return Malformed("no event", str(text)[:200])
    event = msg["event"]
    try:
        if event == "connected":
            return Connected(str(msg.get("protocol", "")), str(msg.get("version", "")))
        if event == "start":
            start = msg["start"]
            fmt = start.get("mediaFormat", {})
            params = start.get("customParameters") or {}
            return Start(
                stream_sid=str(msg.get("streamSid") or start["streamSid"]),
                call_sid=str(start.get("callSid", "")),
                account_sid=str(start.get("accountSid", "")),
                encoding=str(fmt.get("encoding", "")),
                sample_rate=_int(fmt.get("sampleRate")),
                channels=_int(fmt.get("channels")),
                tracks=tuple(str(t) for t in start.get("tracks", ())),
                parameters={str(k): str(v) for k, v in params.items()},
            )
        if event == "media":
            media = msg["media"]
            payload = base64.b64decode(media["payload"], validate=True)
            return Media(
                payload, str(media.get("track", "")), _int(media.get("chunk")),
                _int(media.get("timestamp")),
            )  # fmt: skip
        if event == "mark":
            return Mark(str(msg["mark"]["name"]))
        if event == "dtmf":
            return Dtmf(str(msg["dtmf"]["digit"]))
        if event == "stop":
            return Stop(str((msg.get("stop") or {}).get("callSid", "")))
    except (KeyError, TypeError, AttributeError, binascii.Error) as exc:
        return Malformed(f"bad {event} message: {exc!r}", str(text)[:200])
    return Unknown(event)


def encode_media(stream_sid: str, ulaw: bytes) -> str:
    payload = base64.b64encode(ulaw).decode()
    return json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})


def encode_mark(stream_sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def encode_clear(stream_sid: str) -> str:
    return json.dumps({"event": "clear", "streamSid": stream_sid})


class ProtocolViolation(ValueError):
    """Twilio (or whoever speaks for it) broke the protocol."""


class StreamState:
    """What a stream has said so far; refuses media before ``start`` and a new stream id.

    ``feed(event)`` returns the event if it is valid in this state and raises
    :class:`ProtocolViolation` otherwise. Tracks the marks we sent that are still
    unanswered.
    """

    def __init__(self) -> None:
        self.start: Start | None = None
        self.stopped = False
        self.pending_marks: list[str] = []

    @property
    def stream_sid(self) -> str:
        if self.start is None:
            raise ProtocolViolation("no start message yet")
        return self.start.stream_sid

    def feed(self, event: TwilioEvent) -> TwilioEvent:
        if self.stopped:
            raise ProtocolViolation(f"{type(event).__name__} after stop")
        if isinstance(event, Start):
            if self.start is not None:
                raise ProtocolViolation("a second start message")
            if event.encoding != "audio/x-mulaw" or event.sample_rate != SAMPLE_RATE:
                raise ProtocolViolation(
                    f"unsupported media format {event.encoding}@{event.sample_rate}"
                )
            self.start = event
        elif isinstance(event, Media | Mark | Dtmf) and self.start is None:
            raise ProtocolViolation(f"{type(event).__name__.lower()} before start")
        elif isinstance(event, Mark):
            if event.name in self.pending_marks:
                self.pending_marks.remove(event.name)
        elif isinstance(event, Stop):
            self.stopped = True
        return event

    def sent_mark(self, name: str) -> None:
        self.pending_marks.append(name)

    def cleared(self) -> None:
        """After ``clear``, Twilio answers the pending marks; forget them."""
        self.pending_marks.clear()


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


def compute_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Twilio's ``X-Twilio-Signature`` for a request: base64(HMAC-SHA1(token, url +
    each POST parameter's name and value, sorted by name))."""
    data = url + "".join(k + params[k] for k in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def validate_signature(
    auth_token: str, url: str, params: Mapping[str, str], signature: str
) -> bool:
    """Whether ``signature`` is Twilio's for this request (constant-time comparison)."""
    expected = compute_signature(auth_token, url, params)
    return hmac.compare_digest(expected.encode(), signature.encode())
