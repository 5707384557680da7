"""Azure Speech TTS over REST (``POST https://{region}.tts.speech.microsoft.com/cognitiveservices/v1``).

Each flush segment of a stream is one POST of SSML, sent one after another in order; its
audio is streamed into frames as the chunked response arrives. The loop is
:class:`~antiphon.services.http_tts.HttpSegmentStream`'s: ``deadlines.connect`` until the
response head (TCP, TLS, the request, the status line), ``deadlines.first_audio`` from the
request to its first audio byte, ``deadlines.idle`` between chunks and until the end of
the body; a segment whose request fails before any of its audio arrived (a dropped
connection, 429 or 5xx) is retried once, after the server's ``Retry-After`` when that is
short; a cancel closes the response at once (the connection is dropped, not reused), so
no audio of it can reach anyone. This module supplies the SSML, the credentials and the
decoding (RIFF headers stripped, mu-law and a-law decoded). Connections are kept alive
and reused by the shared ``httpx`` client, which ``aclose()`` closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable

import httpx

from antiphon.audio.codecs import decode_to_pcm
from antiphon.errors import AuthError, ConfigError, ProviderError, ProviderTimeoutError
from antiphon.net.http import HttpOptions, make_client
from antiphon.plugins.keys import require_api_key
from antiphon.protocols import azure_tts as az
from antiphon.services.http_tts import HttpSegmentStream
from antiphon.services.tts import TTS, TTSDeadlines

__all__ = [
    "PROVIDER",
    "AzureSynthesisStream",
    "AzureTTS",
    "TokenSource",
    "resolve_key",
    "resolve_voice",
]

log = logging.getLogger(__name__)
PROVIDER = az.PROVIDER

#: A bearer token, or an async function returning a fresh one (tokens live 10 minutes).
TokenSource = str | Callable[[], Awaitable[str]]


def resolve_voice(
    voice: str | az.Voice,
    *,
    language: str | None = None,
    style: str | None = None,
    style_degree: float | None = None,
    role: str | None = None,
    rate: str | None = None,
    pitch: str | None = None,
    volume: str | None = None,
) -> az.Voice:
    """A :class:`~antiphon.protocols.azure_tts.Voice` from a name and keyword settings."""
    if isinstance(voice, az.Voice):
        extras = (language, style, style_degree, role, rate, pitch, volume)
        if any(v is not None for v in extras):
            raise ConfigError("pass either a Voice object or voice settings, not both")
        return voice
    return az.Voice(voice, language, style, style_degree, role, rate, pitch, volume)


def resolve_key(api_key: str | None, *, what: str) -> str:
    """The API key from ``api_key`` or ``$AZURE_SPEECH_KEY``, or a ConfigError."""
    return require_api_key(
        api_key,
        az.KEY_ENV,
        what,
        how=f"and {az.REGION_ENV}; a Speech resource key, under 'Keys and Endpoint' of the "
        "Speech resource in the Azure portal; a bearer token works too: auth_token=...",
    )


class AzureTTS(TTS):
    """Azure Speech text-to-speech over the REST API.

    Credentials: ``api_key`` (default ``$AZURE_SPEECH_KEY``) or ``auth_token`` (a bearer
    token or an async function returning one). ``region`` defaults to
    ``$AZURE_SPEECH_REGION``; ``base_url`` replaces it (``http://127.0.0.1:PORT`` for a
    local fake); ``deployment_id`` selects a custom voice deployment. Audio:
    ``encoding`` (linear16, mulaw, alaw) and ``sample_rate`` pick a raw output format, or
    name one with ``output_format`` (``riff-*`` formats have their header stripped).
    ``voice`` is a voice name (``language``, ``style``, ``rate``... set the rest) or a
    :class:`~antiphon.protocols.azure_tts.Voice`.

    ``max_retries``: retries of a segment that failed before any of its audio (dropped
    connection, 429, 5xx); ``max_retry_wait``: the longest ``Retry-After`` honoured
    (longer ones fail at once, the error carrying ``retry_after``); ``retry_backoff``:
    the wait without a ``Retry-After``.
    """

    provider = PROVIDER

    def __init__(
        self,
        *,
        api_key: str | None = None,
        auth_token: TokenSource | None = None,
        region: str | None = None,
        base_url: str | None = None,
        deployment_id: str | None = None,
        voice: str | az.Voice = az.DEFAULT_VOICE,
        language: str | None = None,
        style: str | None = None,
        style_degree: float | None = None,
        role: str | None = None,
        rate: str | None = None,
        pitch: str | None = None,
        volume: str | None = None,
        encoding: str = "linear16",
        sample_rate: int | None = None,
        output_format: str | None = None,
        deadlines: TTSDeadlines | None = None,
        http: HttpOptions | None = None,
        max_retries: int = 1,
        max_retry_wait: float = 2.0,
        retry_backoff: float = 0.25,
    ) -> None:
        if output_format is not None:
            fmt = az.resolve_output_format(output_format)
            if sample_rate is not None and sample_rate != fmt.sample_rate:
                raise ConfigError(
                    f"output_format {fmt.name!r} is {fmt.sample_rate} Hz but sample_rate="
                    f"{sample_rate} was given; drop one of them"
                )
        else:
            fmt = az.output_format_for(encoding, sample_rate or 24000)
        if max_retries < 0 or max_retry_wait < 0 or retry_backoff < 0:
            raise ConfigError("max_retries, max_retry_wait and retry_backoff must be >= 0")
        self.output_format = fmt
        self.voice = resolve_voice(
            voice,
            language=language,
            style=style,
            style_degree=style_degree,
            role=role,
            rate=rate,
            pitch=pitch,
            volume=volume,
        )
        if base_url is None:
            region = region if region is not None else os.environ.get(az.REGION_ENV)
        self.url = az.build_url(region=region, base_url=base_url, deployment_id=deployment_id)
        self._token: TokenSource | None = auth_token
        self._key: str | None = None
        if auth_token is None:
            self._key = resolve_key(api_key, what="Azure TTS")
        elif isinstance(auth_token, str) and not auth_token.strip():
            raise ConfigError("auth_token is empty; pass a bearer token or use api_key")
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.retry_backoff = retry_backoff
        self.backoff: float = retry_backoff
        super().__init__(sample_rate=fmt.sample_rate, channels=1, deadlines=deadlines)
        d = self.deadlines
        self.http_options = http or HttpOptions(
            connect_timeout=d.connect,
            read_timeout=max(d.first_audio, d.idle) + d.close,
            write_timeout=d.idle,
            pool_timeout=d.connect,
        )
        self._client: httpx.AsyncClient = make_client(self.http_options)

    async def request_headers(self) -> dict[str, str]:
        """The headers of one synthesis request (credentials included: do not log them)."""
        token: str | None = None
        if callable(self._token):
            token = await self._token()
        elif self._token is not None:
            token = self._token
        return az.request_headers(
            self.output_format,
            key=self._key,
            token=token.strip() if token is not None else None,
            user_agent=self.http_options.user_agent,
        )

    def _new_stream(self, generation: int) -> AzureSynthesisStream:
        return AzureSynthesisStream(self, generation)

    async def _aclose_resources(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.deadlines.close):
                await self._client.aclose()


class AzureSynthesisStream(HttpSegmentStream):
    """One synthesis: each flush segment is one POST of SSML, spoken in order (the loop
    is :class:`~antiphon.services.http_tts.HttpSegmentStream`'s)."""

    auth_hint = az.AUTH_HINT
    status_hints = az.STATUS_HINTS

    def __init__(self, tts: AzureTTS, generation: int) -> None:
        self._tts = tts
        self._riff: az.RiffReader | None = None
        super().__init__(tts, generation)

    def _bodies(self, text: str) -> list[bytes]:
        return [az.build_ssml(text, self._tts.voice).encode("utf-8")]

    async def _headers(self) -> dict[str, str]:
        """The request headers; a token source that hangs or fails is a typed error."""
        timeout = self._tts.deadlines.connect
        try:
            async with asyncio.timeout(timeout):
                return await self._tts.request_headers()
        except TimeoutError:
            raise ProviderTimeoutError(
                "the auth_token source did not return a token",
                provider=self.provider,
                stage="connect",
                timeout=timeout,
            ) from None
        except (ProviderError, ConfigError):
            raise
        except Exception as exc:
            raise AuthError(
                f"the auth_token source failed: {exc!r}",
                provider=self.provider,
                stage="connect",
                hint="check the function passed as auth_token",
            ) from exc

    def _begin_body(self) -> None:
        fmt = self._tts.output_format
        self._riff = az.RiffReader(fmt) if fmt.container == "riff" else None

    def _decode(self, chunk: bytes) -> bytes:
        if self._riff is not None:
            chunk = self._unwrap(self._riff, chunk)
        encoding = self._tts.output_format.encoding
        return chunk if encoding == "linear16" or not chunk else decode_to_pcm(encoding, chunk)

    def _end_body(self) -> None:
        if self._riff is not None:
            self._unwrap(self._riff, None)

    def _unwrap(self, riff: az.RiffReader, chunk: bytes | None) -> bytes:
        try:
            if chunk is None:
                riff.finish()
                return b""
            return riff.feed(chunk)
        except az.RiffError as exc:
            raise ProviderError(
                str(exc),
                provider=self.provider,
                stage="receive",
                hint="the response is not the requested RIFF format; try a raw-* format",
            ) from None
