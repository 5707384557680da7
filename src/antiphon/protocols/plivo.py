"""Plivo audio streams, sans I/O: its spelling of a media stream, Plivo XML, V3 signatures.

Sources: https://plivo.com/docs/voice/xml/audio-streaming (``<Stream>``, ``playAudio``),
https://docs.plivo.com/docs/voice/xml/audiostream (attributes, ``contentType``),
https://www.plivo.com/docs/voice/concepts/signature-validation (V3 signatures; the
official library's ``plivo/utils/signature_v3.py`` is the reference we follow).

Plivo's stream is Media Streams with other words: ``start`` carries ``streamId``,
``callId``, ``accountId`` and ``mediaFormat``; ``media`` and ``dtmf`` as Twilio's. We send
``playAudio`` (with ``contentType`` and ``sampleRate``), ``checkpoint`` (a flat ``name``,
echoed as ``playedStream`` once played) and ``clearAudio``, each with the ``streamId``.

V3 signatures: ``X-Plivo-Signature-V3`` (one or more base64 signatures, comma-separated)
is HMAC-SHA256, keyed with the auth token, of ``base_url + "." + nonce``
(``X-Plivo-Signature-V3-Nonce``). For a GET (the stream's WebSocket upgrade), the base
URL is the URL without its query, then ``?`` and the query's parameters sorted
(``k=v`` joined with ``&``) if any. For a POST, the query part (if any) is followed by
``.``, and the body's parameters sorted by name are appended as ``namevalue``; a POST
with parameters always carries the ``?``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit, urlunsplit
from xml.sax.saxutils import escape

from antiphon.protocols.media_stream import JsonDialect, JsonSpelling

__all__ = ["DIALECT", "compute_signature", "stream_xml", "validate_signature"]

DIALECT = JsonDialect(
    "plivo",
    JsonSpelling(
        stream="streamId", call="callId", account="accountId", sid_out="streamId",
        media_event="playAudio",
        media_extra={"contentType": "audio/x-mulaw", "sampleRate": 8000},
        mark_event="checkpoint", flat_mark=True, played="playedStream",
        clear_event="clearAudio",
    ),
)  # fmt: skip


def _grouped(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return grouped


def _base_url(url: str, post_params: dict[str, list[str]] | None) -> str:
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    query = _grouped(parse_qsl(parts.query, keep_blank_values=True))
    sorted_query = "&".join(f"{k}={v}" for k in sorted(query) for v in sorted(query[k]))
    if post_params is None:  # GET
        return base + (f"?{sorted_query}" if sorted_query else "")
    if sorted_query or post_params:
        base += f"?{sorted_query}"
    if sorted_query and post_params:
        base += "."
    return base + "".join(f"{k}{v}" for k in sorted(post_params) for v in sorted(post_params[k]))


def compute_signature(
    auth_token: str, method: str, url: str, nonce: str, params: Iterable[tuple[str, str]] = ()
) -> str:
    """Plivo's V3 signature of a request (``params``: a POST's form fields)."""
    post = _grouped(params) if method.upper() == "POST" else None
    base = _base_url(url, post)
    # the official library joins the UTF-8 of the URL read back byte by byte (latin-1)
    data = f"{base.encode().decode('latin-1')}.{nonce.encode().decode('latin-1')}".encode()
    digest = hmac.new(auth_token.encode(), data, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def validate_signature(
    auth_token: str,
    method: str,
    url: str,
    nonce: str | None,
    signature: str | None,
    params: Iterable[tuple[str, str]] = (),
) -> bool:
    """Whether the ``X-Plivo-Signature-V3`` header holds Plivo's signature (constant time)."""
    if not nonce or not signature:
        return False
    expected = compute_signature(auth_token, method, url, nonce, params).encode()
    ok = False
    for given in signature.split(","):
        ok |= hmac.compare_digest(expected, given.strip().encode())
    return ok


def stream_xml(ws_url: str) -> str:
    """Plivo XML that keeps the call on a bidirectional μ-law stream at ``ws_url``."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        '<Stream bidirectional="true" keepCallAlive="true" '
        f'contentType="audio/x-mulaw;rate=8000">{escape(ws_url)}</Stream></Response>'
    )
