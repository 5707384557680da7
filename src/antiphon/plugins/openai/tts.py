"""OpenAITTS: OpenAI text to speech over HTTP (``POST {base_url}/audio/speech``), streamed.

Each flush segment of a stream is one request (several for a segment over the API's
4,096 characters, cut at sentence ends by
:func:`~antiphon.protocols.openai_tts.split_input`; each piece is sent stripped), with
``response_format: "pcm"``: the body is raw 24 kHz 16-bit mono audio, emitted as frames
as it arrives. The loop — requests in order, every wait bounded by the deadlines, retries
before any audio of a request (after ``Retry-After`` or a jittered backoff from
``retry_backoff``), never after, a cancel closing the response — is
:class:`~antiphon.services.http_tts.HttpSegmentStream`'s. Connections are kept alive and
reused by the shared ``httpx`` client, which ``aclose()`` closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, ClassVar

import httpx

from antiphon.errors import ConfigError
from antiphon.net.http import HttpOptions, make_client
from antiphon.plugins.keys import auth_hint, require_api_key
from antiphon.protocols import openai_tts as ot
from antiphon.protocols.retry import Backoff, make_backoff
from antiphon.services.http_tts import HttpSegmentStream
from antiphon.services.tts import TTS, TTSDeadlines

__all__ = ["KEY_ENV", "OpenAISynthesisStream", "OpenAITTS"]

PROVIDER = "openai"
KEY_ENV = "OPENAI_API_KEY"
_HINTS = {
    400: "the request was refused; the server's message says which field",
    404: "check the model name and the base URL",
}


class OpenAITTS(TTS):
    """OpenAI text to speech, streamed as 24 kHz PCM (see the module docstring).

    Args:
        model: ``gpt-4o-mini-tts`` (default), ``tts-1`` or ``tts-1-hd``.
        voice: A built-in voice (``alloy``, ``coral``, ``marin``…) or a ``voice_…`` id.
        api_key: Defaults to ``$OPENAI_API_KEY``.
        base_url: ``https://api.openai.com/v1`` (or a compatible server).
        speed: 0.25 to 4.0. instructions: how to speak (not for ``tts-1``/``tts-1-hd``).
        organization, project: the optional OpenAI headers.
        max_retries, max_retry_wait, retry_backoff: retries before any audio of a request
            (``retry_backoff``: the backoff's base in seconds, or a ``Backoff``).

    Raises:
        ConfigError: no key, or an option out of range.
    """

    provider: ClassVar[str] = PROVIDER

    def __init__(
        self,
        *,
        model: str = ot.DEFAULT_MODEL,
        voice: str = ot.DEFAULT_VOICE,
        api_key: str | None = None,
        base_url: str = ot.DEFAULT_BASE_URL,
        speed: float | None = None,
        instructions: str | None = None,
        organization: str | None = None,
        project: str | None = None,
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
        self.url = ot.speech_url(base_url)
        self.options: dict[str, Any] = {
            "model": model,
            "voice": voice,
            "speed": speed,
            "instructions": instructions,
        }
        ot.build_body("probe", **self.options)  # refuse bad options now
        key = require_api_key(api_key, KEY_ENV, "OpenAITTS")
        self.headers = ot.request_headers(key, organization=organization, project=project)
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        super().__init__(sample_rate=ot.SAMPLE_RATE, channels=1, deadlines=deadlines)
        d = self.deadlines
        self.http_options = http or HttpOptions(
            connect_timeout=d.connect,
            read_timeout=max(d.first_audio, d.idle) + d.close,
            write_timeout=d.idle,
            pool_timeout=d.connect,
        )
        self._client: httpx.AsyncClient = make_client(self.http_options)

    def body(self, text: str) -> bytes:
        """The encoded request body for ``text`` (at most :data:`~ot.MAX_INPUT` chars)."""
        return ot.encode_body(ot.build_body(text, **self.options))

    def _new_stream(self, generation: int) -> OpenAISynthesisStream:
        return OpenAISynthesisStream(self, generation)

    async def _aclose_resources(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.deadlines.close):
                await self._client.aclose()


class OpenAISynthesisStream(HttpSegmentStream):
    """One synthesis: each flush segment is one request (or a few), spoken in order."""

    auth_hint = auth_hint(KEY_ENV)
    status_hints = _HINTS

    def __init__(self, tts: OpenAITTS, generation: int) -> None:
        self._tts = tts
        super().__init__(tts, generation)

    def _bodies(self, text: str) -> list[bytes]:
        return [self._tts.body(piece) for piece in ot.split_input(text)]

    async def _headers(self) -> dict[str, str]:
        return self._tts.headers
