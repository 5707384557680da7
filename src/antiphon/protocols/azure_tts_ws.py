"""The Speech SDK's WebSocket framing (sans I/O), as the fake speaks it.

How it is built: text frames are ``Name:value`` header lines, a blank line, then the
body; binary frames are a 2-byte big-endian header length, the header lines, then the
payload. :func:`encode_ws_text` and :func:`encode_ws_audio` write them,
:func:`parse_ws_message` reads either into a :class:`WsMessage`. The format was read from
Microsoft's JS SDK; it is not a published API. Why a module of its own: only the fakes of
the SDK's service (TTS and STT) need it, apart from the REST protocol of
:mod:`antiphon.protocols.azure_tts`, which re-exports every name here.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "WsMessage",
    "encode_ws_audio",
    "encode_ws_text",
    "parse_ws_message",
]


# The Speech SDK's WebSocket messages (read from Microsoft's JS SDK; not a published API):
# text frames are "Name:value" header lines, a blank line, then the body; binary frames
# are a 2-byte big-endian header length, the header lines, then the payload.


@dataclass(frozen=True, slots=True)
class WsMessage:
    """One Speech SDK WebSocket message: its headers (``Path``, ``X-RequestId``, ...) and body."""

    headers: Mapping[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.header("Path").lower()

    @property
    def request_id(self) -> str:
        return self.header("X-RequestId")

    def header(self, name: str) -> str:
        name = name.lower()
        for k, v in self.headers.items():
            if k.lower() == name:
                return v
        return ""

    def json(self) -> object:
        """The body parsed as JSON (None if it is not JSON)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def _header_lines(headers: Mapping[str, str]) -> str:
    return "".join(f"{k}:{v}\r\n" for k, v in headers.items())


def _parse_headers(text: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in text.split("\r\n"):
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip()] = v.strip()
    return headers


def encode_ws_text(
    path: str, request_id: str, body: str = "", content_type: str = "application/json"
) -> str:
    """A text frame with ``Path``/``X-RequestId``/``Content-Type`` headers and ``body``."""
    head = {"X-RequestId": request_id, "Content-Type": content_type, "Path": path}
    return _header_lines(head) + "\r\n" + body


def encode_ws_audio(request_id: str, stream_id: str, audio: bytes) -> bytes:
    """A binary ``Path: audio`` frame carrying ``audio``."""
    head = _header_lines(
        {"X-RequestId": request_id, "X-StreamId": stream_id, "Path": "audio"}
    ).encode("ascii")
    return struct.pack(">H", len(head)) + head + audio


def parse_ws_message(frame: str | bytes) -> WsMessage:
    """Headers and body of a text or binary frame (``ValueError`` if it is malformed)."""
    if isinstance(frame, str):
        head, sep, body = frame.partition("\r\n\r\n")
        if not sep:
            raise ValueError("text frame without a blank line after its headers")
        return WsMessage(_parse_headers(head), body.encode("utf-8"))
    if len(frame) < 2:
        raise ValueError("binary frame shorter than its header length")
    n = struct.unpack(">H", frame[:2])[0]
    if len(frame) < 2 + n:
        raise ValueError("binary frame shorter than its headers")
    return WsMessage(_parse_headers(frame[2 : 2 + n].decode("ascii", "replace")), frame[2 + n :])
