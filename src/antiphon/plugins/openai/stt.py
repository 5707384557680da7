"""OpenAI realtime transcription STT (``wss://api.openai.com/v1/realtime?intent=transcription``).

One transcription session per stream, driven by
:class:`~antiphon.services.ws_stt.WebSocketSTT`;
:class:`~antiphon.protocols.openai_transcription.TranscriptionSession` decides what each
message means and when the stream is complete. The first message configures the session
(``session.update`` with ``type: "transcription"``: the model, ``gpt-4o-transcribe`` by
default, language, prompt, turn detection, noise reduction); audio goes as PCM16 at
24 kHz in ``input_audio_buffer.append`` (pushed audio of any rate is converted).

Utterances: with turn detection on (server VAD, the default) the service commits each
speech run itself and transcribes it; ``flush()`` commits only speech still in progress,
and its answer is the ``completed`` transcript of every run pending. With
``turn_detection=None`` the client's flush is the only commit. The deltas of a run are
interim transcripts (the text so far), ``completed`` the final one. The protocol has no
end-of-session message: after ``end_input()`` the stream completes when every
transcript owed has arrived, and closes the connection itself.

Deadlines, retries with backoff and the replay of audio after a drop (the session
configured again on the new connection) are the driver's: see
:mod:`antiphon.services.ws_stt`.

:class:`OpenAIBatchSTT` is the same contract over the file endpoint
(``POST /v1/audio/transcriptions``, :mod:`antiphon.protocols.openai_audio`): one request
per speech segment, through :class:`~antiphon.services.batch_stt.BatchSTT`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from antiphon.errors import ProviderError
from antiphon.net.http import BodyReader, HttpOptions, make_client, open_response
from antiphon.plugins.keys import auth_hint, require_api_key
from antiphon.protocols import openai_audio as oa
from antiphon.protocols import openai_transcription as ot
from antiphon.protocols.retry import Backoff
from antiphon.protocols.stt_session import Action
from antiphon.services.batch_stt import BatchSTT, Clip
from antiphon.services.stt import RecognizeStream, STTDeadlines
from antiphon.services.vad import VAD
from antiphon.services.ws_stt import Message, WebSocketRecognizeStream, WebSocketSTT

__all__ = ["KEY_ENV", "OpenAIBatchSTT", "OpenAIRecognizeStream", "OpenAISTT"]

KEY_ENV = "OPENAI_API_KEY"
_DEFAULT_VAD: Mapping[str, Any] = {"type": "server_vad"}


class OpenAISTT(WebSocketSTT[ot.TranscriptionSession]):
    """OpenAI's realtime transcription (see the module docstring).

    Args:
        api_key: Defaults to ``$OPENAI_API_KEY`` (an ephemeral client secret works too).
        model: ``gpt-4o-transcribe``, ``gpt-4o-mini-transcribe``, ``whisper-1``, ...
        language: ISO-639-1 code of the speech (improves accuracy and latency).
        prompt: Text that guides the transcription (vocabulary, style).
        turn_detection: A ``server_vad``/``semantic_vad`` object (default
            ``{"type": "server_vad"}``); ``server_vad=False`` turns it off (the client's
            flush commits).
        noise_reduction: ``{"type": "near_field"|"far_field"}`` or None.
        logprobs: Ask for log probabilities (the final transcript's confidence).
        base_url: ``wss://api.openai.com`` or a local fake (``ws://127.0.0.1:PORT``).
        keepalive_interval: How often the idle stream's task wakes (the protocol has no
            keep-alive message; WebSocket pings keep the connection).
        max_reconnects, journal_seconds, backoff, reconnect_budget: Retries of a refused
            or dropped connection, replaying the audio not yet transcribed
            (:class:`~antiphon.services.ws_stt.WebSocketSTT`).

    Raises:
        ConfigError: no key, or an option out of range.
    """

    provider = ot.PROVIDER
    error_hint = "see OpenAI's error message above"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str = ot.DEFAULT_MODEL,
        language: str | None = None,
        prompt: str | None = None,
        turn_detection: Mapping[str, Any] | None = None,
        server_vad: bool = True,
        noise_reduction: Mapping[str, Any] | None = None,
        logprobs: bool = False,
        base_url: str = ot.DEFAULT_BASE_URL,
        deadlines: STTDeadlines | None = None,
        keepalive_interval: float = 4.0,
        max_reconnects: int = 3,
        journal_seconds: float = 30.0,
        backoff: Backoff | None = None,
        reconnect_budget: float = 5.0,
    ) -> None:
        key = require_api_key(
            api_key, KEY_ENV, "OpenAI STT", how="or pass an ephemeral client secret as api_key"
        )
        if turn_detection is None and server_vad:
            turn_detection = _DEFAULT_VAD
        self.options = ot.TranscriptionOptions(
            model=model,
            language=language,
            prompt=prompt,
            turn_detection=turn_detection,
            noise_reduction=noise_reduction,
            logprobs=logprobs,
        )
        super().__init__(
            url=ot.build_url(base_url),
            headers=ot.auth_headers(key),
            auth_hint=auth_hint(KEY_ENV),
            deadlines=deadlines,
            keepalive_interval=keepalive_interval,
            max_reconnects=max_reconnects,
            journal_seconds=journal_seconds,
            backoff=backoff,
            reconnect_budget=reconnect_budget,
        )

    @property
    def sample_rate(self) -> int:
        """The rate of the audio on the wire (24 kHz PCM16)."""
        return ot.SAMPLE_RATE

    # -- the protocol
    def new_session(self) -> ot.TranscriptionSession:
        return ot.TranscriptionSession(self.options, journal_seconds=self.journal_seconds)

    def close_error(self, code: int | None, reason: str, *, stage: str) -> ProviderError:
        return ot.close_error(code, reason, stage=stage)

    def opening(self, session: ot.TranscriptionSession) -> list[Message]:
        return session.start()

    def flush_input(self, session: ot.TranscriptionSession) -> tuple[list[Message], list[Action]]:
        return session.flush(), []

    def end_input(self, session: ot.TranscriptionSession) -> list[Message]:
        return session.end_input()

    def _new_stream(self, generation: int) -> RecognizeStream:
        return OpenAIRecognizeStream(self, generation)


class OpenAIRecognizeStream(WebSocketRecognizeStream[ot.TranscriptionSession]):
    """One recognition on its own transcription session."""


class OpenAIBatchSTT(BatchSTT):
    """OpenAI's file transcription, one request per speech segment.

    Args:
        api_key: Defaults to ``$OPENAI_API_KEY``.
        model: ``gpt-4o-transcribe``, ``gpt-4o-mini-transcribe``, ``whisper-1``, ...
        language: ISO-639-1 code of the speech.
        prompt: Text that guides the transcription.
        base_url: ``https://api.openai.com`` (without ``/v1``) or a local fake.
        vad, min_segment, max_segment, max_retries, backoff: The segmenting and retries
            of :class:`~antiphon.services.batch_stt.BatchSTT`.
        http: Connection deadlines and pool (default: from ``deadlines``).

    Raises:
        ConfigError: no key, or an option out of range.
    """

    provider = oa.PROVIDER

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str = oa.DEFAULT_MODEL,
        language: str | None = None,
        prompt: str | None = None,
        base_url: str = oa.DEFAULT_BASE_URL,
        deadlines: STTDeadlines | None = None,
        vad: Callable[[], VAD] | None = None,
        min_segment: float = 0.1,
        max_segment: float = 30.0,
        max_retries: int = 2,
        backoff: Backoff | None = None,
        http: HttpOptions | None = None,
    ) -> None:
        key = require_api_key(api_key, KEY_ENV, "OpenAI STT")
        self.request = oa.TranscriptionRequest(model=model, language=language, prompt=prompt)
        self.url = oa.build_url(base_url)
        super().__init__(
            sample_rate=oa.SAMPLE_RATE,
            deadlines=deadlines,
            vad=vad,
            min_segment=min_segment,
            max_segment=max_segment,
            max_retries=max_retries,
            backoff=backoff,
        )
        self._auth = ot.auth_headers(key)
        d = self.deadlines
        self.http_options = http or HttpOptions(
            connect_timeout=d.connect,
            read_timeout=d.final,
            write_timeout=d.process,
            pool_timeout=d.connect,
        )
        self._client: httpx.AsyncClient = make_client(self.http_options)

    async def transcribe(self, pcm: bytes) -> Clip:
        request = self._client.build_request(
            "POST",
            self.url,
            headers=self._auth,
            data=self.request.fields(),
            files={"file": ("speech.wav", oa.wav(pcm, self.sample_rate), "audio/wav")},
        )
        d = self.deadlines
        response = await open_response(
            self._client,
            request,
            provider=self.provider,
            timeout=d.final,
            stage="final",
            auth_hint=auth_hint(KEY_ENV),
            options=self.http_options,
        )
        body = BodyReader(response, provider=self.provider, options=self.http_options)
        loop = asyncio.get_running_loop()
        data = bytearray()
        try:
            while (
                chunk := await body.next(deadline_at=loop.time() + d.idle, timeout=d.idle)
            ) is not None:
                data += chunk
                if len(data) > 1 << 20:
                    raise ProviderError(
                        "a transcription response over 1 MiB",
                        provider=self.provider,
                        stage="receive",
                    )
        finally:
            await body.aclose()
        return Clip(oa.parse_response(bytes(data)))

    async def _aclose_resources(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.deadlines.close):
                await self._client.aclose()
