"""Azure Speech STT through the Speech SDK (``antiphon[azure]``): continuous recognition.

How it is built (the lifecycle of the Azure TTS SDK plugin, :mod:`antiphon.plugins.azure.sdk`,
on the shared :class:`~antiphon.aio.worker.ThreadWorker`):

- each stream owns one recognizer and one thread that makes **every** SDK call: building
  the ``SpeechConfig``, the 16 kHz ``PushAudioInputStream``, the ``SpeechRecognizer``
  and its ``PhraseListGrammar`` (keyterms), ``start_continuous_recognition_async().get()``,
  ``push_stream.write`` and ``close``, ``stop_continuous_recognition_async().get()``,
  ``disconnect_all`` and the release of the native objects. The loop only waits, always
  with a deadline, for futures the thread resolves;
- the SDK's events (``recognizing``, ``recognized``, ``canceled``, ``session_stopped``,
  ``speech_end_detected``, the connection's ``connected``) run on the SDK's own threads,
  which only copy their fields into the plain events of
  :mod:`antiphon.protocols.azure_stt` and hand them to the stream's mailbox with
  ``loop.call_soon_threadsafe``; :class:`~antiphon.protocols.azure_stt.RecognitionSession`
  decides what each means, in order with the caller's audio;
- deadlines: ``connect`` from the first audio to the connection (the SDK connects by
  itself), ``process`` per SDK call, ``final`` from a flush or ``end_input`` to its
  answer, ``idle`` between events while one is owed, ``close`` for the close;
- the close, on the thread, whatever ended the stream: the push stream is closed, the
  recognition stopped if it still runs, every signal disconnected and the native objects
  dropped; then the thread is joined. If an SDK call never returns, ``aclose()`` still
  returns within its deadline (the thread is a daemon and finishes the close by itself);
- a cancellation is a typed error (:func:`~antiphon.protocols.azure_stt.cancellation_error`:
  credentials → ``AuthError``, quota → retryable 429, connection and service errors), of
  stage ``connect`` until the SDK's ``connected`` event (a refusal is one), else ``receive``.

``flush()``: the SDK cannot end an utterance on request, so silence past the
segmentation silence is written; the final it brings answers the flush (``flushed``).
``end_input()`` closes the push stream; the stream completes when the recognition stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from antiphon.aio.channel import ChannelClosed
from antiphon.aio.worker import ThreadWorker
from antiphon.audio.resample import AudioConverter
from antiphon.errors import ChannelFull, ProviderError, ProviderTimeoutError, StreamClosedError
from antiphon.plugins.azure.sdk import load_sdk
from antiphon.plugins.azure.tts import resolve_key
from antiphon.protocols import azure_stt as az
from antiphon.protocols.stt_session import Act, Action, Phase, Recognized
from antiphon.services.stt import (
    STT,
    AudioInput,
    EndInput,
    FlushInput,
    RecognizeStream,
    STTDeadlines,
)

__all__ = ["REGION_ENV", "AzureRecognizeStream", "AzureSTT"]

log = logging.getLogger(__name__)
PROVIDER = az.PROVIDER
REGION_ENV = "AZURE_SPEECH_REGION"
#: How long the close waits for a cancelled recognition's session to stop by itself.
STOPPING_WAIT = 1.0


@dataclass(frozen=True, slots=True)
class _Settings:
    endpoint: str
    key: str | None
    token: str | None
    options: az.RecognizerOptions


def _name(value: object) -> str:
    return str(getattr(value, "name", value))


class _Engine:
    """The SDK objects of one recognizer. Built, used and released on its thread only."""

    def __init__(
        self, sdk_module: Any, settings: _Settings, deliver: Callable[[object], None]
    ) -> None:
        sdk = sdk_module if sdk_module is not None else load_sdk()
        self.sdk = sdk
        self.stopped = threading.Event()  # the session stopped (set on an SDK thread)
        self.canceled = threading.Event()  # the SDK cancelled the recognition itself
        self.started = False
        self.input_closed = False
        if settings.key is not None:
            config = sdk.SpeechConfig(subscription=settings.key, endpoint=settings.endpoint)
        else:
            config = sdk.SpeechConfig(endpoint=settings.endpoint)
            config.authorization_token = settings.token
        options = settings.options
        config.speech_recognition_language = options.language
        config.set_property(
            sdk.PropertyId.Speech_SegmentationSilenceTimeoutMs,
            str(options.segmentation_silence_ms),
        )
        fmt = sdk.audio.AudioStreamFormat(
            samples_per_second=az.SAMPLE_RATE, bits_per_sample=16, channels=1
        )
        self.push: Any = sdk.audio.PushAudioInputStream(stream_format=fmt)
        audio_config = sdk.audio.AudioConfig(stream=self.push)
        self.recognizer: Any = sdk.SpeechRecognizer(speech_config=config, audio_config=audio_config)
        self.grammar: Any = None
        if options.phrases:
            self.grammar = sdk.PhraseListGrammar.from_recognizer(self.recognizer)
            for phrase in options.phrases:
                self.grammar.addPhrase(phrase)
        self.connection: Any = sdk.Connection.from_recognizer(self.recognizer)
        self.signals: list[Any] = []
        for signal, handler in _handlers(deliver, self.stopped, self.canceled, sdk).items():
            owner = self.connection if signal in ("connected", "disconnected") else self.recognizer
            getattr(owner, signal).connect(handler)
            self.signals.append(getattr(owner, signal))

    def start(self) -> None:
        self.started = True
        self.recognizer.start_continuous_recognition_async().get()

    def write(self, data: bytes) -> None:
        self.push.write(data)

    def end_input(self) -> None:
        if not self.input_closed:
            self.input_closed = True
            self.push.close()

    def close(self) -> None:
        """Stop and release everything (the worker's last act on its thread)."""
        try:
            self.end_input()
            if self.canceled.is_set():
                # cancelled by the SDK itself: the session stops on its own (a stop call
                # now would wait for the service's turn to time out)
                self.stopped.wait(STOPPING_WAIT)
            elif self.started and not self.stopped.is_set():
                self.recognizer.stop_continuous_recognition_async().get()
        finally:
            signals, self.signals = self.signals, []
            for signal in signals:
                signal.disconnect_all()
            self.grammar = self.connection = self.recognizer = self.push = None
            self.sdk = None


def _handlers(
    deliver: Callable[[object], None],
    stopped: threading.Event,
    canceled_: threading.Event,
    sdk: Any,
) -> dict[str, Callable[[Any], None]]:
    """SDK event handlers: they run on the SDK's threads and only copy and hand over."""
    matched = _name(sdk.ResultReason.RecognizedSpeech)

    def recognizing(evt: Any) -> None:
        with contextlib.suppress(Exception):
            r = evt.result
            deliver(az.RecognizingEvent(str(r.text or ""), int(r.offset), int(r.duration)))

    def recognized(evt: Any) -> None:
        with contextlib.suppress(Exception):
            r = evt.result
            ok = _name(r.reason) == matched
            deliver(az.RecognizedEvent(str(r.text or ""), int(r.offset), int(r.duration), ok))

    def canceled(evt: Any) -> None:
        canceled_.set()
        with contextlib.suppress(Exception):
            d = evt.cancellation_details
            deliver(az.Canceled(_name(d.reason), _name(d.code), str(d.error_details or "")))

    def session_stopped(evt: Any) -> None:
        stopped.set()
        deliver(az.SessionStopped())

    def speech_end(evt: Any) -> None:
        with contextlib.suppress(Exception):
            deliver(az.SpeechEnded(int(evt.offset)))

    return {
        "recognizing": recognizing,
        "recognized": recognized,
        "canceled": canceled,
        "session_stopped": session_stopped,
        "speech_end_detected": speech_end,
        "connected": lambda evt: deliver(az.Connection(True)),
        "disconnected": lambda evt: deliver(az.Connection(False)),
    }


class AzureSTT(STT):
    """Azure Speech STT through the Speech SDK (see the module docstring).

    Args:
        api_key: Defaults to ``$AZURE_SPEECH_KEY`` (unless ``auth_token`` is given).
        auth_token: A bearer token instead of a key.
        region: Defaults to ``$AZURE_SPEECH_REGION``.
        endpoint: A recognition WebSocket URL instead of the region's
            (``ws://127.0.0.1:PORT`` for a local fake: the path is appended).
        language: The locale recognised (``en-US``).
        keyterms: Phrase hints (the SDK's ``PhraseListGrammar``).
        segmentation_silence_ms: Silence that ends an utterance (100 to 5000 ms).
        deadlines: See :class:`~antiphon.services.stt.STTDeadlines`.
        sdk: The Speech SDK module (default: ``azure.cognitiveservices.speech``; a test
            double may stand in).

    Raises:
        ConfigError: no key, no region or endpoint, an option out of range, or the SDK is
            not installed (``pip install 'antiphon[azure]'``) when a stream starts.
    """

    provider = PROVIDER

    def __init__(
        self,
        *,
        api_key: str | None = None,
        auth_token: str | None = None,
        region: str | None = None,
        endpoint: str | None = None,
        language: str = az.DEFAULT_LANGUAGE,
        keyterms: Sequence[str] = (),
        segmentation_silence_ms: int = 500,
        deadlines: STTDeadlines | None = None,
        sdk: Any = None,
    ) -> None:
        key = None if auth_token else resolve_key(api_key, what="Azure STT")
        self.options = az.RecognizerOptions(
            language=language,
            phrases=tuple(keyterms),
            segmentation_silence_ms=segmentation_silence_ms,
        )
        self.endpoint = az.recognition_endpoint(
            region=region if region is not None else os.environ.get(REGION_ENV),
            endpoint=endpoint,
        )
        super().__init__(deadlines=deadlines)
        self._settings = _Settings(self.endpoint, key, auth_token, self.options)
        self._sdk_module = sdk
        self._workers: set[ThreadWorker[_Engine]] = set()

    @property
    def threads(self) -> list[threading.Thread]:
        """The recognizer threads alive now (for leak checks)."""
        return [w.thread for w in self._workers if w.thread.is_alive()]

    def _new_stream(self, generation: int) -> RecognizeStream:
        return AzureRecognizeStream(self, generation)


class AzureRecognizeStream(RecognizeStream):
    """One recognition on its own recognizer and thread of an :class:`AzureSTT`."""

    def __init__(self, stt: AzureSTT, generation: int) -> None:
        self._stt = stt
        self._session = az.RecognitionSession(stt.options)
        self._worker: ThreadWorker[_Engine] | None = None
        self._connected = False
        super().__init__(
            provider=stt.provider,
            generation=generation,
            owner=stt._tasks,
            close_timeout=stt.deadlines.close,
        )

    # -- from the SDK's threads (through the worker's hand-off to the loop)
    def _hand_over(self, event: object) -> None:
        if self._mailbox.closed:
            return
        with contextlib.suppress(ChannelClosed, StreamClosedError, ChannelFull):
            self._mailbox.send_nowait(event)

    async def _call(self, fn: Callable[[_Engine], None], *, stage: str, timeout: float) -> None:
        assert self._worker is not None
        await self._worker.call(fn, timeout=timeout, stage=stage)

    # -- the stream's task
    async def _run(self) -> None:
        stt, session = self._stt, self._session
        dl = stt.deadlines
        loop = asyncio.get_running_loop()
        settings, sdk_module = stt._settings, stt._sdk_module
        worker: ThreadWorker[_Engine] = ThreadWorker(
            lambda: _Engine(sdk_module, settings, functools.partial(worker.post, self._hand_over)),
            provider=PROVIDER,
            close=_Engine.close,
        )
        self._worker = worker
        stt._workers.add(worker)
        await self._call(_Engine.start, stage="connect", timeout=dl.connect)
        converter = AudioConverter(az.SAMPLE_RATE, 1)
        connect_by: float | None = None  # set at the first write
        owed_since = heard_at = loop.time()
        while True:
            now = loop.time()
            fail_at: float | None = None
            if not self._connected and connect_by is not None:
                fail_at = connect_by
            if session.awaiting:
                owed = min(owed_since + dl.final, max(owed_since, heard_at) + dl.idle)
                fail_at = owed if fail_at is None else min(fail_at, owed)
            if fail_at is not None and now >= fail_at:
                raise self._timeout(owed_since, now, connecting=not self._connected)
            try:
                async with asyncio.timeout_at(fail_at):
                    item = await self._mailbox.recv()
            except TimeoutError:
                continue
            if isinstance(item, AudioInput | FlushInput | EndInput):
                pcm = converter.process(item.frame).data if isinstance(item, AudioInput) else b""
                if not isinstance(item, AudioInput):
                    pcm = converter.flush().data
                data = session.audio(pcm) if pcm else b""
                was_awaiting = session.awaiting
                if isinstance(item, FlushInput):
                    self._took_flush()
                    data += session.flush()
                if data:
                    if connect_by is None:
                        connect_by = loop.time() + dl.connect
                    await self._call(
                        functools.partial(_Engine.write, data=data),
                        stage="send",
                        timeout=dl.process,
                    )
                if isinstance(item, EndInput):
                    session.end()
                    await self._call(_Engine.end_input, stage="send", timeout=dl.process)
                if not was_awaiting and session.awaiting:
                    owed_since = loop.time()
                continue
            heard_at = loop.time()
            if isinstance(item, az.Connection) and item.up:
                self._connected = True
            owed = session.awaiting
            actions = session.receive(item)  # type: ignore[arg-type]
            answered = (
                owed
                and not session.awaiting
                and session.phase is Phase.OPEN
                and not self._flush_pending
            )
            error = self._apply(actions, answered=answered)
            if error is not None:
                raise error
            if session.done:
                return

    def _apply(self, actions: Sequence[Action], *, answered: bool) -> ProviderError | None:
        """Emit the transcripts of ``actions`` (the last final marked ``flushed`` when
        they answer the flushes); the error of a failure."""
        found: list[Recognized] = []
        for action in actions:
            if action.act is Act.FAIL:
                event = action.event
                if isinstance(event, az.Canceled) and event.reason == "Error":
                    # never connected (a refusal, an unreachable host): the connect failed
                    stage = "receive" if self._connected else "connect"
                    return az.cancellation_error(event.code, event.details, stage=stage)
                return ProviderError(
                    f"the recognition ended early: {action.note}",
                    provider=PROVIDER,
                    stage="receive",
                    hint="the service stopped the session; retrying usually helps",
                    retryable=True,
                )
            if action.act is Act.EMIT and action.transcript is not None:
                found.append(action.transcript)
        self._deliver(found, answered=answered)
        return None

    def _timeout(self, owed_since: float, now: float, *, connecting: bool) -> ProviderTimeoutError:
        dl = self._stt.deadlines
        if connecting:
            return ProviderTimeoutError(
                "the Speech SDK did not connect",
                provider=PROVIDER,
                stage="connect",
                timeout=dl.connect,
                hint="is the service reachable? check the region or endpoint and the network",
            )
        if now >= owed_since + dl.final:
            return ProviderTimeoutError(
                "no final transcript after flush/end_input",
                provider=PROVIDER,
                stage="final",
                timeout=dl.final,
                hint="the service went silent; the recognizer is stopped and released",
            )
        return ProviderTimeoutError(
            "the service stopped answering while results were owed",
            provider=PROVIDER,
            stage="receive",
            timeout=dl.idle,
            hint="the service went silent; the recognizer is stopped and released",
        )

    async def _cleanup(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        try:
            if not await worker.aclose(self._stt.deadlines.close):
                log.error("azure stt: the recognizer thread did not end within the close deadline")
        finally:
            if not worker.thread.is_alive():
                self._stt._workers.discard(worker)
