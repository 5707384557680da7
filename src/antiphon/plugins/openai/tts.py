"""OpenAITTS: OpenAI text to speech over HTTP (``POST {base_url}/audio/speech``), streamed.

Each flush segment of a stream is one request (several for a segment over the API's
4,096 characters, cut at sentence ends by
:func:`~antiphon.protocols.openai_tts.split_input`), sent one after another in order with
``response_format: "pcm"``: the body is raw 24 kHz 16-bit mono audio, read as it arrives
and emitted as frames (an odd byte at a chunk's end waits for the next chunk). The
segment loop is :class:`~antiphon.services.tts.FlushSegmentStream`'s; requests and bodies
go through :func:`~antiphon.net.http.open_response` and
:class:`~antiphon.net.http.BodyReader`, every wait bounded: ``deadlines.connect`` until the
response head, ``deadlines.first_audio`` from the request to its first audio byte,
``deadlines.idle`` between chunks and until the end of the body. A request that fails
before any of its audio arrived (a dropped connection, 429 or 5xx) is retried
``max_retries`` times after the server's ``Retry-After`` or a jittered backoff
(:func:`~antiphon.protocols.retry.retry_delay`); once audio was heard it never is. A
cancel closes the response at once (its connection is dropped, not reused). Connections
are kept alive and reused by the shared ``httpx`` client, which ``aclose()`` closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any, ClassVar

import httpx

from antiphon import metrics
from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError, ProviderError
from antiphon.net.http import BodyReader, HttpOptions, make_client, open_response
from antiphon.protocols import openai_tts as ot
from antiphon.protocols.retry import Backoff, retry_delay
from antiphon.services.http_llm import make_backoff
from antiphon.services.tts import TTS, FlushSegmentStream, TTSDeadlines

__all__ = ["KEY_ENV", "OpenAISynthesisStream", "OpenAITTS"]

log = logging.getLogger(__name__)

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
        key = (api_key if api_key is not None else os.environ.get(KEY_ENV, "")).strip()
        if not key:
            raise ConfigError(f"OpenAITTS needs an API key: pass api_key=... or set {KEY_ENV}")
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
        self.requests = 0
        """HTTP requests sent (retries included)."""

    def body(self, text: str) -> bytes:
        """The encoded request body for ``text`` (at most :data:`~ot.MAX_INPUT` chars)."""
        return ot.encode_body(ot.build_body(text, **self.options))

    def _new_stream(self, generation: int) -> OpenAISynthesisStream:
        return OpenAISynthesisStream(self, generation)

    async def _aclose_resources(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.deadlines.close):
                await self._client.aclose()


class OpenAISynthesisStream(FlushSegmentStream):
    """One synthesis: each flush segment is one request (or a few), spoken in order."""

    def __init__(self, tts: OpenAITTS, generation: int) -> None:
        self._tts = tts
        self._carry = b""
        self._heard = False
        super().__init__(
            provider=tts.provider,
            sample_rate=tts.sample_rate,
            channels=1,
            generation=generation,
            owner=tts._tasks,
            close_timeout=tts.deadlines.close,
        )

    async def _speak(self, text: str) -> None:
        for piece in ot.split_input(text):
            await self._speak_piece(self._tts.body(piece))

    async def _speak_piece(self, body: bytes) -> None:
        """One request, retried before any of its audio when the policy allows."""
        tts = self._tts
        attempt = 0
        while True:
            self._heard = False
            try:
                await self._request(body)
                return
            except ProviderError as exc:
                delay = retry_delay(
                    exc,
                    delivered=self._heard,
                    attempt=attempt,
                    max_retries=tts.max_retries,
                    max_wait=tts.max_retry_wait,
                    backoff=tts.backoff,
                )
                if delay is None:
                    raise
                attempt += 1
                log.info("%s: %s; retrying in %.2fs", self.provider, exc, delay)
                await asyncio.sleep(delay)

    async def _request(self, body: bytes) -> None:
        tts = self._tts
        d = tts.deadlines
        loop = asyncio.get_running_loop()
        started = loop.time()
        tts.requests += 1
        request = tts._client.build_request("POST", tts.url, content=body, headers=tts.headers)
        response = await open_response(
            tts._client,
            request,
            provider=self.provider,
            timeout=d.connect,
            stage="connect",
            auth_hint=f"check the API key ({KEY_ENV} or api_key=...)",
            hints=_HINTS,
            options=tts.http_options,
        )
        reader = BodyReader(response, provider=self.provider, options=tts.http_options)
        try:
            ctype = response.headers.get("content-type", "")
            if ctype.startswith(("application/json", "text/")):
                raise ProviderError(
                    f"the server answered {ctype}, not audio",
                    provider=self.provider,
                    stage="receive",
                    hint="is base_url an OpenAI-compatible /v1 with /audio/speech?",
                )
            while True:
                if self._heard:
                    chunk = await reader.next(
                        deadline_at=loop.time() + d.idle,
                        timeout=d.idle,
                        message="audio stopped before the end of the response",
                        hint="the server went silent mid-answer; the connection is dropped",
                    )
                else:
                    chunk = await reader.next(
                        deadline_at=started + d.first_audio,
                        timeout=d.first_audio,
                        message="no audio after the request",
                        hint="the service accepted the request but sent no audio",
                    )
                if chunk is None:
                    break
                if not self._heard:
                    metrics.TTS_TTFB.labels(self.provider).observe(loop.time() - started)
                    self._heard = True
                self._deliver(chunk)
            if self._carry:
                log.warning("%s: dropped a trailing odd byte of 16-bit audio", self.provider)
                self._carry = b""
        finally:
            await reader.aclose()

    def _deliver(self, data: bytes) -> None:
        if self._carry:
            data, self._carry = self._carry + data, b""
        if len(data) % 2:
            data, self._carry = data[:-1], data[-1:]
        if data:
            self._emit(AudioFrame(data, self.sample_rate, 1, self.generation))
