"""HumeTTS: Hume Octave text to speech over HTTP (``POST /v0/tts/stream/file``), streamed.

Each flush segment of a stream is one request (:mod:`antiphon.protocols.hume_tts`: one
utterance, ``format: pcm``, ``instant_mode``), sent one after another in order; the body
is raw 48 kHz 16-bit mono audio, emitted as frames as it arrives. The loop — requests in
order, every wait bounded by the deadlines, retries before any audio of a request (after
``Retry-After`` or a jittered backoff from ``retry_backoff``), never after, a cancel
closing the response — is :class:`~antiphon.services.http_tts.HttpSegmentStream`'s.
Connections are kept alive and reused by the shared ``httpx`` client.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, ClassVar

import httpx

from antiphon.errors import ConfigError
from antiphon.net.http import HttpOptions, make_client
from antiphon.plugins.keys import auth_hint, require_api_key
from antiphon.protocols import hume_tts as ht
from antiphon.protocols.retry import Backoff, make_backoff
from antiphon.services.http_tts import HttpSegmentStream
from antiphon.services.tts import TTS, TTSDeadlines

__all__ = ["DEFAULT_VOICE", "HumeSynthesisStream", "HumeTTS"]

PROVIDER = "hume"
_HINTS = {422: "the request was refused; the server's message says which field"}
#: A voice of Hume's Voice Library.
DEFAULT_VOICE = "Ava Song"


class HumeTTS(TTS):
    """Hume Octave text to speech, streamed as 48 kHz PCM (see the module docstring).

    Args:
        voice: A voice's id (a UUID) or name; ``voice_provider``: ``HUME_AI`` (the Voice
            Library) or ``CUSTOM_VOICE`` (your saved voices).
        api_key: Defaults to ``$HUME_API_KEY``.
        base_url: ``https://api.hume.ai`` (or a proxy).
        description: Acting directions ("calm, warm"). speed: a multiplier.
        version: The Octave version (``"1"`` or ``"2"``); None lets Hume choose.
        instant_mode: Hume's lowest-latency streaming (needs a voice).
        max_retries, max_retry_wait, retry_backoff: retries before any audio of a request.

    Raises:
        ConfigError: no key, or an option out of range.
    """

    provider: ClassVar[str] = PROVIDER

    def __init__(
        self,
        *,
        voice: str | None = DEFAULT_VOICE,
        voice_provider: str = "HUME_AI",
        api_key: str | None = None,
        base_url: str = ht.DEFAULT_BASE_URL,
        description: str | None = None,
        speed: float | None = None,
        version: str | None = None,
        instant_mode: bool = True,
        deadlines: TTSDeadlines | None = None,
        http: HttpOptions | None = None,
        max_retries: int = 1,
        max_retry_wait: float = 2.0,
        retry_backoff: float | Backoff = 0.25,
    ) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if max_retry_wait < 0:
            raise ConfigError("max_retry_wait must be >= 0 seconds")
        self.backoff = make_backoff(retry_backoff)
        self.url = ht.stream_url(base_url)
        self.options: dict[str, Any] = {
            "voice": voice,
            "voice_provider": voice_provider,
            "description": description,
            "speed": speed,
            "version": version,
            "instant_mode": instant_mode,
        }
        ht.build_body("probe", **self.options)  # refuse bad options now
        key = require_api_key(api_key, ht.KEY_ENV, "HumeTTS")
        self.headers = ht.request_headers(key)
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        super().__init__(sample_rate=ht.SAMPLE_RATE, channels=1, deadlines=deadlines)
        d = self.deadlines
        self.http_options = http or HttpOptions(
            connect_timeout=d.connect,
            read_timeout=max(d.first_audio, d.idle) + d.close,
            write_timeout=d.idle,
            pool_timeout=d.connect,
        )
        self._client: httpx.AsyncClient = make_client(self.http_options)

    def body(self, text: str) -> bytes:
        """The encoded request body for ``text``."""
        return ht.encode_body(ht.build_body(text, **self.options))

    def _new_stream(self, generation: int) -> HumeSynthesisStream:
        return HumeSynthesisStream(self, generation)

    async def _aclose_resources(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.deadlines.close):
                await self._client.aclose()


class HumeSynthesisStream(HttpSegmentStream):
    """One synthesis: each flush segment is one request, spoken in order."""

    auth_hint = auth_hint(ht.KEY_ENV)
    status_hints = _HINTS

    def __init__(self, tts: HumeTTS, generation: int) -> None:
        self._tts = tts
        super().__init__(tts, generation)

    def _bodies(self, text: str) -> list[bytes]:
        return [self._tts.body(text.strip())]

    async def _headers(self) -> dict[str, str]:
        return self._tts.headers
