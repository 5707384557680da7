"""AWS event-stream framing (``application/vnd.amazon.eventstream``) and SigV4, sans I/O.

Two small pieces every AWS streaming API shares, spoken without the SDK:

- the framing, as specified at https://smithy.io/2.0/aws/amazon-eventstream.html: each
  message is a prelude (total length and headers length, big-endian 32-bit, then a CRC32
  of those 8 bytes), typed headers (name length, name, a type byte and the value: strings
  are type 7 with a 16-bit length), the payload, and a CRC32 of everything before it.
  :class:`EventStreamDecoder` takes bytes as they arrive and returns whole
  :class:`EventMessage`\\ s, checking both CRCs and bounding a message's size;
  :func:`encode_message` is the inverse (for fakes and tests);
- Signature Version 4 (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html):
  :func:`sigv4_headers` signs one request with a key pair (and a session token).

Both are checked against ``botocore``'s own ``EventStreamBuffer`` and ``SigV4Auth`` in the
tests (botocore is a test dependency only).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import struct
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

__all__ = [
    "MAX_MESSAGE",
    "EventMessage",
    "EventStreamDecoder",
    "EventStreamError",
    "HeaderValue",
    "encode_message",
    "sigv4_headers",
]

#: The largest message accepted (AWS's own limit is 16 MiB; a chat event is far smaller).
MAX_MESSAGE = 1024 * 1024
_PRELUDE = 12
HeaderValue = bool | int | str | bytes | dt.datetime | uuid.UUID


class EventStreamError(ValueError):
    """The bytes are not a valid event stream (a bad CRC, length or header)."""


@dataclass(frozen=True, slots=True)
class EventMessage:
    headers: dict[str, HeaderValue]
    payload: bytes = field(repr=False)

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value if isinstance(value, str) else None


def _header_value(data: bytes, pos: int, kind: int) -> tuple[HeaderValue, int]:
    if kind == 0:
        return True, pos
    if kind == 1:
        return False, pos
    fixed = {2: ">b", 3: ">h", 4: ">i", 5: ">q"}
    if kind in fixed:
        fmt = fixed[kind]
        size = struct.calcsize(fmt)
        return struct.unpack_from(fmt, data, pos)[0], pos + size
    if kind in (6, 7):
        (length,) = struct.unpack_from(">H", data, pos)
        raw = data[pos + 2 : pos + 2 + length]
        if len(raw) != length:
            raise EventStreamError("a header value runs past the headers")
        if kind == 6:
            return bytes(raw), pos + 2 + length
        try:
            return raw.decode("utf-8"), pos + 2 + length
        except UnicodeDecodeError:
            raise EventStreamError("a string header is not UTF-8") from None
    if kind == 8:
        (millis,) = struct.unpack_from(">q", data, pos)
        return dt.datetime.fromtimestamp(millis / 1000, dt.UTC), pos + 8
    if kind == 9:
        return uuid.UUID(bytes=bytes(data[pos : pos + 16])), pos + 16
    raise EventStreamError(f"unknown header type {kind}")


def _headers(data: bytes) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    pos = 0
    try:
        while pos < len(data):
            length = data[pos]
            name = data[pos + 1 : pos + 1 + length].decode("utf-8")
            kind = data[pos + 1 + length]
            value, pos = _header_value(data, pos + 2 + length, kind)
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError):
        raise EventStreamError("the headers are cut short or not UTF-8") from None
    if pos != len(data):
        raise EventStreamError("the headers run past their length")
    return headers


class EventStreamDecoder:
    """Bytes in, whole messages out; ``max_message`` bounds one message."""

    def __init__(self, *, max_message: int = MAX_MESSAGE) -> None:
        self._buffer = bytearray()
        self._max = max_message

    @property
    def pending(self) -> int:
        """Bytes of a message not complete yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[EventMessage]:
        self._buffer += data
        out: list[EventMessage] = []
        buf = self._buffer
        while len(buf) >= _PRELUDE:
            total, headers_length, prelude_crc = struct.unpack_from(">III", buf, 0)
            if zlib.crc32(bytes(buf[:8])) != prelude_crc:
                raise EventStreamError("the prelude's CRC does not match")
            if total > self._max:
                raise EventStreamError(f"a message of {total} bytes (at most {self._max})")
            if total < _PRELUDE + headers_length + 4:
                raise EventStreamError("a message shorter than its headers")
            if len(buf) < total:
                break
            message = bytes(buf[:total])
            del buf[:total]
            (crc,) = struct.unpack_from(">I", message, total - 4)
            if zlib.crc32(message[:-4]) != crc:
                raise EventStreamError("the message's CRC does not match")
            headers = _headers(message[_PRELUDE : _PRELUDE + headers_length])
            out.append(EventMessage(headers, message[_PRELUDE + headers_length : -4]))
        return out


def encode_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One message with string headers (what AWS services send)."""
    raw = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        raw += bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = _PRELUDE + len(raw) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw + payload
    return head + struct.pack(">I", zlib.crc32(head))


# --------------------------------------------------------------------------- SigV4


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sigv4_headers(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    service: str,
    region: str,
    access_key: str,
    secret_key: str,
    session_token: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """``headers`` plus ``X-Amz-Date``, ``X-Amz-Security-Token`` (with a session token)
    and the ``Authorization`` of SigV4 over all of them (lower-cased names)."""
    when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    parts = urlsplit(url)
    signed = {k.lower().strip(): " ".join(v.split()) for k, v in headers.items()}
    signed["host"] = parts.netloc
    signed["x-amz-date"] = stamp
    if session_token:
        signed["x-amz-security-token"] = session_token
    names = sorted(signed)
    # Non-S3 services sign the path with each segment encoded once more.
    path = "/".join(quote(segment, safe="-_.~") for segment in (parts.path or "/").split("/"))
    query = "&".join(
        sorted(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
            for k, _, v in (p.partition("=") for p in parts.query.split("&") if p)
        )
    )
    canonical = "\n".join(
        [
            method.upper(),
            path,
            query,
            "".join(f"{n}:{signed[n]}\n" for n in names),
            ";".join(names),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(("AWS4" + secret_key).encode(), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = dict(headers)
    out["X-Amz-Date"] = stamp
    if session_token:
        out["X-Amz-Security-Token"] = session_token
    out["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return out
