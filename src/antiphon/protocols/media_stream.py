"""Carrier media streams, sans I/O: what Twilio, Telnyx, Plivo, Exotel and Vonage share.

Every carrier here opens a WebSocket to us when a call is answered and speaks the same
conversation in its own words: a start (the call's ids and the media format), the
caller's audio, touch-tones, echoes of the marks we put in our audio once it has played,
and an end. We send audio, marks and a clear (drop what the carrier buffered: barge-in).
So one set of typed events and one :class:`StreamState` serve them all, and each
carrier is a :class:`Dialect`: how its messages are spelled.

Four of them spell it as JSON text with base64 audio (Twilio's Media Streams and three
near-copies); :class:`JsonDialect` reads and writes those from a small table of key and
event names (:class:`JsonSpelling`), so a carrier of that family is a table, not code.
Vonage sends raw 16-bit PCM in binary frames and JSON events beside them: its own
dialect in :mod:`antiphon.protocols.vonage`.

Audio stays bytes here: a dialect names its codec (``mulaw`` or ``l16``) and rate; the
transport converts (protocols never import the audio layer).
"""

from __future__ import annotations

import base64
import binascii
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from antiphon.protocols import bounded_json

__all__ = [
    "MAX_DEPTH", "Connected", "Dialect", "Dtmf", "JsonDialect", "JsonSpelling", "Malformed",
    "Mark", "Media", "MediaEvent", "ProtocolViolation", "Start", "Stop", "StreamState",
    "Unknown",
]  # fmt: skip

MAX_DEPTH = 8
"""The carriers' messages nest 3 levels (``start.mediaFormat``); deeper is refused unparsed."""


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
    payload: bytes  # audio in the dialect's codec
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


MediaEvent = Connected | Start | Media | Mark | Dtmf | Stop | Malformed | Unknown


class ProtocolViolation(ValueError):
    """The carrier (or whoever speaks for it) broke the protocol."""


def int_of(value: Any) -> int:
    """A count the carriers send as a number or a string of digits (0 otherwise)."""
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else 0


class StreamState:
    """What a stream has said so far; refuses media before ``start`` and a second start.

    ``feed(event)`` returns the event if it is valid in this state and raises
    :class:`ProtocolViolation` otherwise. ``formats`` are the (encoding, rate) pairs the
    stream may announce. Tracks the marks we sent that are still unanswered.
    """

    def __init__(self, formats: frozenset[tuple[str, int]] = frozenset({("audio/x-mulaw", 8000)})):
        self.formats = formats
        self.start: Start | None = None
        self.stopped = False
        self.pending_marks: list[str] = []

    @property
    def stream_sid(self) -> str:
        if self.start is None:
            raise ProtocolViolation("no start message yet")
        return self.start.stream_sid

    def feed(self, event: MediaEvent) -> MediaEvent:
        if self.stopped:
            raise ProtocolViolation(f"{type(event).__name__} after stop")
        if isinstance(event, Start):
            if self.start is not None:
                raise ProtocolViolation("a second start message")
            if (event.encoding, event.sample_rate) not in self.formats:
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
        """After a clear, the carrier answers (or drops) the pending marks; forget them."""
        self.pending_marks.clear()


class Dialect(ABC):
    """How one carrier spells a media stream; what a bridge needs to speak it.

    ``codec`` is ``mulaw`` (G.711 μ-law bytes) or ``l16`` (16-bit little-endian PCM);
    ``frame_seconds`` is the audio in one outgoing message.
    """

    name: str
    codec: str
    sample_rate: int
    formats: frozenset[tuple[str, int]]
    frame_seconds: float = 0.02

    @property
    def frame_bytes(self) -> int:
        """Bytes of audio in one outgoing media message."""
        width = 1 if self.codec == "mulaw" else 2
        return round(self.sample_rate * self.frame_seconds) * width

    def new_state(self) -> StreamState:
        return StreamState(self.formats)

    @abstractmethod
    def parse(self, message: str | bytes, *, max_depth: int = MAX_DEPTH) -> MediaEvent:
        """One message from the carrier → a typed event (``Malformed`` if invalid)."""

    @abstractmethod
    def encode_media(self, stream_sid: str, audio: bytes) -> str | bytes: ...

    @abstractmethod
    def encode_mark(self, stream_sid: str, name: str) -> str:
        """A mark: echoed by the carrier once the audio sent before it has played."""

    @abstractmethod
    def encode_clear(self, stream_sid: str) -> str:
        """Drop the audio the carrier has buffered (barge-in)."""


@dataclass(frozen=True, slots=True)
class JsonSpelling:
    """The key and event names of a Media-Streams-like carrier (see the module docstring).

    ``stream``: the stream id, at the top level or in ``start``; ``sid_out``: the key we
    send it under (None: not sent). ``played``: the event echoing a mark, whose name is
    in ``mark.name`` or, for a flat mark, at the top level under ``name``.
    """

    stream: str = "streamSid"
    call: str = "callSid"
    account: str = "accountSid"
    media_format: str = "mediaFormat"
    sample_rate: str = "sampleRate"
    parameters: str = "customParameters"
    sid_out: str | None = "streamSid"
    media_event: str = "media"
    media_extra: Mapping[str, Any] = field(default_factory=dict)
    mark_event: str = "mark"
    flat_mark: bool = False
    played: str = "mark"
    clear_event: str = "clear"


class JsonDialect(Dialect):
    """A carrier whose stream is JSON text with base64 audio, spelled by a table."""

    def __init__(
        self,
        name: str,
        spelling: JsonSpelling,
        *,
        codec: str = "mulaw",
        sample_rate: int = 8000,
        formats: frozenset[tuple[str, int]] = frozenset({("audio/x-mulaw", 8000)}),
        frame_seconds: float = 0.02,
    ) -> None:
        self.name = name
        self.spelling = spelling
        self.codec = codec
        self.sample_rate = sample_rate
        self.formats = formats
        self.frame_seconds = frame_seconds

    def parse(self, message: str | bytes, *, max_depth: int = MAX_DEPTH) -> MediaEvent:
        if isinstance(message, bytes):
            return Malformed("binary message (this stream is JSON text)", repr(message[:200]))
        text = message
        try:
            msg = bounded_json.loads(text, max_depth=max_depth)
        except bounded_json.JSONTooDeep as exc:
            return Malformed(str(exc), str(text)[:200])
        except (ValueError, TypeError):
            return Malformed("not JSON", str(text)[:200])
        if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
            return Malformed("no event", str(text)[:200])
        event = msg["event"]
        k = self.spelling
        try:
            if event == "connected":
                return Connected(str(msg.get("protocol", "")), str(msg.get("version", "")))
            if event == "start":
                start = msg["start"]
                fmt = start.get(k.media_format) or {}
                params = start.get(k.parameters)
                params = params if isinstance(params, dict) else {}
                return Start(
                    stream_sid=str(msg.get(k.stream) or start[k.stream]),
                    call_sid=str(start.get(k.call, "")),
                    account_sid=str(start.get(k.account, "")),
                    encoding=str(fmt.get("encoding", "")),
                    sample_rate=int_of(fmt.get(k.sample_rate)),
                    channels=int_of(fmt.get("channels", 1)),
                    tracks=tuple(str(t) for t in start.get("tracks", ())),
                    parameters={str(a): str(b) for a, b in params.items()},
                )
            if event == "media":
                media = msg["media"]
                payload = base64.b64decode(media["payload"], validate=True)
                return Media(
                    payload, str(media.get("track", "")), int_of(media.get("chunk")),
                    int_of(media.get("timestamp")),
                )  # fmt: skip
            if event == k.played:
                mark = msg.get("mark")
                return Mark(str(mark["name"] if mark is not None else msg["name"]))
            if event == "dtmf":
                return Dtmf(str(msg["dtmf"]["digit"]))
            if event == "stop":
                return Stop(str((msg.get("stop") or {}).get(k.call, "")))
        except (KeyError, TypeError, AttributeError, binascii.Error) as exc:
            return Malformed(f"bad {event} message: {exc!r}", str(text)[:200])
        return Unknown(event)

    def _message(self, event: str, stream_sid: str, **body: Any) -> str:
        msg: dict[str, Any] = {"event": event}
        if self.spelling.sid_out is not None:
            msg[self.spelling.sid_out] = stream_sid
        msg.update(body)
        return json.dumps(msg)

    def encode_media(self, stream_sid: str, audio: bytes) -> str:
        payload = base64.b64encode(audio).decode()
        media = {**self.spelling.media_extra, "payload": payload}
        return self._message(self.spelling.media_event, stream_sid, media=media)

    def encode_mark(self, stream_sid: str, name: str) -> str:
        if self.spelling.flat_mark:
            return self._message(self.spelling.mark_event, stream_sid, name=name)
        return self._message(self.spelling.mark_event, stream_sid, mark={"name": name})

    def encode_clear(self, stream_sid: str) -> str:
        return self._message(self.spelling.clear_event, stream_sid)
