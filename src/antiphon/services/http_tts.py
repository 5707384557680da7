"""TTS over HTTP, one request per flush segment: the loop the REST TTS plugins share.

Azure's REST TTS and OpenAI's ``/audio/speech`` differ only in the request they build and
how their bodies decode to PCM; the loop around them lives here once.
:class:`HttpSegmentStream` takes the text pushed up to each ``flush()`` or ``end_input()``
as one segment, in order, and turns it into requests (:meth:`~HttpSegmentStream._bodies`),
each sent with the headers of :meth:`~HttpSegmentStream._headers`. Every wait is bounded:
``deadlines.connect`` until the response head (:func:`~antiphon.net.http.open_response`:
an error status is a typed error), ``deadlines.first_audio`` from the request to its first
audio, ``deadlines.idle`` between chunks and until the end of the body
(:class:`~antiphon.net.http.BodyReader`). The body decodes through
:meth:`~HttpSegmentStream._decode` to int16 PCM, an odd byte at a chunk's end waiting
for the next one (a body that decodes only as a whole, a JSON answer, gives its PCM from
:meth:`~HttpSegmentStream._end_body`). A request that fails before any of its audio
arrived (a dropped connection, 429, 5xx) is retried after the server's ``Retry-After``
or the service's backoff (:func:`~antiphon.protocols.retry.retry_delay`); once audio was
heard it never is. A cancel closes the response at once: its connection is dropped, not
reused, so no audio of it can reach anyone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Protocol

import httpx

from antiphon import metrics
from antiphon.aio.tasks import TaskOwner
from antiphon.audio.frame import AudioFrame
from antiphon.errors import HttpStatusError, ProviderError
from antiphon.net.http import BodyReader, HttpOptions, open_response
from antiphon.protocols.retry import Backoff, retry_delay
from antiphon.services.tts import EndInput, FlushInput, SynthesisStream, TextInput, TTSDeadlines

__all__ = ["HttpSegmentStream", "HttpTTSLike"]

log = logging.getLogger(__name__)


class HttpTTSLike(Protocol):
    """What the stream reads of its TTS service (read-only)."""

    @property
    def provider(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def deadlines(self) -> TTSDeadlines: ...
    @property
    def http_options(self) -> HttpOptions: ...
    @property
    def sample_rate(self) -> int: ...
    @property
    def max_retries(self) -> int: ...
    @property
    def max_retry_wait(self) -> float: ...
    @property
    def backoff(self) -> Backoff | float: ...
    @property
    def _client(self) -> httpx.AsyncClient: ...
    @property
    def _tasks(self) -> TaskOwner: ...


class HttpSegmentStream(SynthesisStream):
    """One synthesis: each flush segment is one or more requests, spoken in order.

    A plugin implements :meth:`_bodies` and :meth:`_headers`, and :meth:`_begin_body`,
    :meth:`_decode` and :meth:`_end_body` when its body is not raw int16 PCM. Class
    attributes give the error hints of :func:`~antiphon.net.http.open_response`.
    """

    auth_hint: str = "check the API key"
    status_hints: Mapping[int, str] | None = None

    def __init__(self, tts: HttpTTSLike, generation: int) -> None:
        self._service = tts
        self._carry = b""
        self._heard = False
        self.requests = 0
        """HTTP requests this stream sent (retries included)."""
        super().__init__(
            provider=tts.provider,
            sample_rate=tts.sample_rate,
            channels=1,
            generation=generation,
            owner=tts._tasks,
            close_timeout=tts.deadlines.close,
        )

    # -- the plugin's
    def _bodies(self, text: str) -> list[bytes]:
        """The request bodies of one segment (``text`` as pushed, not stripped)."""
        raise NotImplementedError

    async def _headers(self) -> dict[str, str]:
        """The headers of one request (credentials included: never log them)."""
        raise NotImplementedError

    def _begin_body(self) -> None:
        """A response's body is about to be read (reset the decoder)."""

    def _decode(self, chunk: bytes) -> bytes:
        """A chunk of the body as int16 PCM (raw PCM by default)."""
        return chunk

    def _end_body(self) -> bytes | None:
        """The body ended: check what the decoder still holds, and return the PCM it
        still has, if any (a body that decodes only as a whole: a JSON answer)."""
        return None

    def _refine_error(self, error: HttpStatusError) -> ProviderError:
        """The error for an error status (a provider that answers a wrong key with 400
        says so here)."""
        return error

    # -- the loop
    async def _run(self) -> None:
        pending: list[str] = []
        while True:
            item = await self._mailbox.recv()
            if isinstance(item, TextInput):
                pending.append(item.text)
                continue
            if isinstance(item, FlushInput | EndInput):
                text = "".join(pending)
                pending.clear()
                if text.strip():
                    for body in self._bodies(text):
                        await self._speak(body)
                if isinstance(item, EndInput):
                    return

    async def _speak(self, body: bytes) -> None:
        """One request, retried before any of its audio when the policy allows."""
        tts = self._service
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
        tts = self._service
        d = tts.deadlines
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.requests += 1
        headers = await self._headers()
        request = tts._client.build_request("POST", tts.url, content=body, headers=headers)
        try:
            response = await open_response(
                tts._client,
                request,
                provider=self.provider,
                timeout=d.connect,
                stage="connect",
                auth_hint=self.auth_hint,
                hints=self.status_hints,
                options=tts.http_options,
            )
        except HttpStatusError as exc:
            raise self._refine_error(exc) from None
        reader = BodyReader(response, provider=self.provider, options=tts.http_options)
        try:
            self._check_response(response)
            self._begin_body()
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
                pcm = self._decode(chunk)
                if pcm:
                    self._audio(pcm, loop.time() - started)
            tail = self._end_body()
            if tail:
                self._audio(tail, loop.time() - started)
            if self._carry:
                log.warning("%s: dropped a trailing odd byte of 16-bit audio", self.provider)
                self._carry = b""
        finally:
            await reader.aclose()

    def _check_response(self, response: httpx.Response) -> None:
        """Refuse a 2xx answer that is not audio (a JSON or text body)."""
        ctype = response.headers.get("content-type", "")
        if ctype.startswith(("application/json", "text/")):
            raise ProviderError(
                f"the server answered {ctype}, not audio",
                provider=self.provider,
                stage="receive",
                hint="check the base URL: it does not look like this provider's TTS endpoint",
            )

    def _audio(self, pcm: bytes, elapsed: float) -> None:
        if not self._heard:
            metrics.TTS_TTFB.labels(self.provider).observe(elapsed)
            self._heard = True
        self._deliver(pcm)

    def _deliver(self, data: bytes) -> None:
        if self._carry:
            data, self._carry = self._carry + data, b""
        if len(data) % 2:
            data, self._carry = data[:-1], data[-1:]
        if data:
            self._emit(AudioFrame(data, self.sample_rate, 1, self.generation))
