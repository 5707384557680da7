"""GoogleTTS: Google Cloud Text-to-Speech over REST (``POST /v1/text:synthesize``).

Each flush segment of a stream (a sentence, from the agent's segmenter) is one request
(:mod:`antiphon.protocols.google_tts`: ``audioEncoding: PCM``, the key in
``x-goog-api-key``), sent one after another in order; the answer is one JSON body with
the whole audio in base64, decoded when it has arrived and emitted as frames. Google's
streaming synthesis is gRPC-only (``StreamingSynthesize``), which would make ``grpcio``
a runtime dependency: see ``docs/google-tts.md`` for why antiphon does not. The loop —
requests in order, every wait bounded by the deadlines (the whole answer within
``first_audio``), retries before any audio of a request, a cancel closing the response —
is :class:`~antiphon.services.http_tts.HttpSegmentStream`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import ClassVar

import httpx

from antiphon.errors import ConfigError, HttpAuthError, HttpStatusError, ProviderError
from antiphon.net.http import HttpOptions, make_client
from antiphon.plugins.keys import auth_hint, require_api_key
from antiphon.protocols import google_tts as gt
from antiphon.protocols.openai_chat import encode_body
from antiphon.protocols.retry import Backoff, make_backoff
from antiphon.services.http_tts import HttpSegmentStream
from antiphon.services.tts import TTS, TTSDeadlines

__all__ = [
    "BURST_SECONDS",
    "FRAME_SECONDS",
    "LEAD_SECONDS",
    "MAX_ANSWER_BYTES",
    "RELEASE_SPEED",
    "GoogleSynthesisStream",
    "GoogleTTS",
]

PROVIDER = "google"
#: The largest answer read (base64 JSON): the API's 5,000 bytes of text can be minutes
#: of audio (~45 MB of base64 at 48 kHz for six minutes); a sentence is far less.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
#: Seconds of audio per frame emitted from an answer.
FRAME_SECONDS = 0.02
#: Of an answer, the audio handed out at once; the rest goes out in bursts of
#: ``BURST_SECONDS`` at ``RELEASE_SPEED`` times real time (see ``_release``).
LEAD_SECONDS = 0.2
BURST_SECONDS = 0.1
RELEASE_SPEED = 4.0
_AUTH_HINT = f"{auth_hint(gt.KEY_ENV)} and that its project has the Text-to-Speech API enabled"
_HINTS = {
    400: "the request was refused; the server's message says which field (voice name?)",
    404: "check the base URL",
}


class GoogleTTS(TTS):
    """Google Cloud Text-to-Speech, one request per flush segment (see the module docstring).

    Args:
        voice: A voice name (``en-US-Chirp3-HD-Charon`` by default; see Google's voice
            list); ``language`` defaults to its first two parts.
        api_key: Defaults to ``$GOOGLE_API_KEY``.
        sample_rate: 8000 to 48000 Hz (Google resamples to it).
        speaking_rate, pitch, volume_gain_db: ``audioConfig`` (not every voice takes all).
        base_url: ``https://texttospeech.googleapis.com`` (or a proxy, or a local fake).
        max_retries, max_retry_wait, retry_backoff: retries before any audio of a request.

    Raises:
        ConfigError: no key, or an option out of range.
    """

    provider: ClassVar[str] = PROVIDER

    def __init__(
        self,
        *,
        voice: str = gt.DEFAULT_VOICE,
        language: str | None = None,
        api_key: str | None = None,
        sample_rate: int = gt.DEFAULT_SAMPLE_RATE,
        speaking_rate: float | None = None,
        pitch: float | None = None,
        volume_gain_db: float | None = None,
        base_url: str = gt.DEFAULT_BASE_URL,
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
        self.options = gt.GoogleTTSOptions(
            voice=voice,
            language=language,
            sample_rate=sample_rate,
            speaking_rate=speaking_rate,
            pitch=pitch,
            volume_gain_db=volume_gain_db,
        )
        self.url = gt.synthesize_url(base_url)
        key = require_api_key(
            api_key,
            gt.KEY_ENV,
            "GoogleTTS",
            how="a Google Cloud API key allowed to call the Text-to-Speech API",
        )
        self.headers = gt.request_headers(key)
        self.backoff = make_backoff(retry_backoff)
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        super().__init__(sample_rate=sample_rate, channels=1, deadlines=deadlines)
        d = self.deadlines
        self.http_options = http or HttpOptions(
            connect_timeout=d.connect,
            read_timeout=max(d.first_audio, d.idle) + d.close,
            write_timeout=d.idle,
            pool_timeout=d.connect,
        )
        self._client: httpx.AsyncClient = make_client(self.http_options)

    def bodies(self, text: str) -> list[bytes]:
        """The encoded request bodies for ``text`` (more than one past 5,000 bytes)."""
        return [encode_body(gt.build_body(t, self.options)) for t in gt.split_text(text)]

    def _new_stream(self, generation: int) -> GoogleSynthesisStream:
        return GoogleSynthesisStream(self, generation)

    async def _aclose_resources(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.deadlines.close):
                await self._client.aclose()


class GoogleSynthesisStream(HttpSegmentStream):
    """One synthesis: each flush segment is one request; each answer decodes whole."""

    auth_hint = _AUTH_HINT
    status_hints = _HINTS

    def __init__(self, tts: GoogleTTS, generation: int) -> None:
        self._tts = tts
        self._answer = bytearray()
        self._backlog = bytearray()
        super().__init__(tts, generation)

    def _bodies(self, text: str) -> list[bytes]:
        return self._tts.bodies(text)

    async def _headers(self) -> dict[str, str]:
        return self._tts.headers

    def _check_response(self, response: httpx.Response) -> None:
        ctype = response.headers.get("content-type", "")
        if not ctype.startswith("application/json"):
            raise ProviderError(
                f"the server answered {ctype or 'no content type'}, not JSON",
                provider=self.provider,
                stage="receive",
                hint="check the base URL: it does not look like Google's text:synthesize",
            )

    def _begin_body(self) -> None:
        self._answer.clear()

    def _decode(self, chunk: bytes) -> bytes:
        self._answer += chunk
        if len(self._answer) > MAX_ANSWER_BYTES:
            raise ProviderError(
                f"the answer grew past {MAX_ANSWER_BYTES} bytes",
                provider=self.provider,
                stage="receive",
                hint="send shorter segments (the agent's segmenter flushes per sentence)",
            )
        return b""  # the audio is known when the whole JSON answer is

    def _end_body(self) -> bytes:
        body, self._answer = bytes(self._answer), bytearray()
        try:
            return gt.parse_response(body)
        except gt.MalformedResponse as exc:
            raise ProviderError(
                f"the answer could not be read: {exc}",
                provider=self.provider,
                stage="receive",
                hint="check the base URL: the server does not answer like text:synthesize",
            ) from None

    def _deliver(self, data: bytes) -> None:
        """Keep the answer's audio for :meth:`_release` (the base emits at once)."""
        self._backlog += data

    async def _speak(self, body: bytes) -> None:
        await super()._speak(body)
        await self._release()

    async def _release(self) -> None:
        """Hand the answer out as 20 ms frames: the first :data:`LEAD_SECONDS` at once,
        the rest at :data:`RELEASE_SPEED` times real time, as a streaming provider's
        audio would come. So the stream stays running while its audio is read, and a
        cancel (a barge-in) drops what was not read yet; the next sentence's request
        still goes out long before this one has been played."""
        audio, self._backlog = bytes(self._backlog), bytearray()
        step = 2 * max(1, round(FRAME_SECONDS * self.sample_rate))
        frames = [audio[pos : pos + step] for pos in range(0, len(audio), step)]
        lead = max(1, round(LEAD_SECONDS / FRAME_SECONDS))
        burst = max(1, round(BURST_SECONDS / FRAME_SECONDS))
        for i in range(0, len(frames), burst):
            if i >= lead:
                await asyncio.sleep(BURST_SECONDS / RELEASE_SPEED)
            for frame in frames[i : i + burst]:
                super()._deliver(frame)

    def _refine_error(self, error: HttpStatusError) -> ProviderError:
        if gt.is_invalid_key(error.status, error.body or ""):
            return HttpAuthError(
                f"HTTP {error.status}: the API key is not valid",
                provider=self.provider,
                stage=error.stage,
                status=error.status,
                body=error.body,
                hint=_AUTH_HINT,
            )
        return error
