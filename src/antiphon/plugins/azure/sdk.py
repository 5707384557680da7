"""Azure Speech TTS with text streaming through the Speech SDK (``antiphon[azure]``).

The SDK (``azure-cognitiveservices-speech``) wraps a native library. Used naively from an
asyncio server it hangs shutdown: native synthesizers are left to the garbage collector,
callbacks stay connected, ``stop_speaking_async()`` is never awaited. Here each
synthesizer is owned by :class:`SdkWorker`, one dedicated thread that makes *every* SDK
call — building the config and synthesizer, ``speak_async``, ``input_stream.write`` and
``close``, ``ResultFuture.get``, ``stop_speaking_async().get()``, ``disconnect_all`` and
the release of the native objects. The event loop only waits, always with a deadline,
for futures the thread resolves; SDK events (called on the SDK's own threads) reach the
stream through ``loop.call_soon_threadsafe`` into its mailbox, and nothing is done on
those threads but that hand-off.

Each flush segment is one ``SpeechSynthesisRequest`` with text-stream input: text is
written as it is pushed, ``flush()`` closes the request's input and the next text opens
a new one (the synthesizer speaks them in order). A synthesizer is reused across
streams that complete; a cancelled or failed one is closed:

1. close the input stream of any open request,
2. wait for the result (bounded; not at all after a cancel),
3. ``stop_speaking_async().get()`` if anything is still outstanding,
4. ``get()`` the result of every request that finished (releasing its native handle),
5. ``disconnect_all()`` on every signal the plugin connected,
6. drop every native reference — on the worker thread — and let the thread end; it is
   then joined. If an SDK call never returns, ``aclose()`` still returns within its
   deadline, logging the step that hangs; the thread finishes the sequence by itself if
   the call ever returns (it is a daemon thread, so it cannot block interpreter exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from antiphon import metrics
from antiphon.aio.channel import Channel, ChannelClosed
from antiphon.audio.codecs import decode_to_pcm
from antiphon.audio.frame import AudioFrame
from antiphon.errors import (
    ConfigError,
    ProviderError,
    ProviderTimeoutError,
    StreamClosedError,
)
from antiphon.plugins.azure.tts import resolve_key
from antiphon.protocols import azure_tts as az
from antiphon.services.tts import (
    TTS,
    EndInput,
    FlushInput,
    SynthesisStream,
    TextInput,
    TTSDeadlines,
    WordTiming,
)

__all__ = [
    "DEFAULT_PROPERTIES",
    "INSTALL_HINT",
    "PROVIDER",
    "SDK_MODULE",
    "AzureSdkSynthesisStream",
    "AzureSdkTTS",
    "SdkSettings",
    "SdkWorker",
    "load_sdk",
    "sdk_installed",
    "ws_endpoint",
]

log = logging.getLogger(__name__)
PROVIDER = az.PROVIDER
SDK_MODULE = "azure.cognitiveservices.speech"
INSTALL_HINT = "install the Speech SDK with: pip install 'antiphon[azure]'"
#: SpeechConfig properties set by default (``PropertyId`` names): Microsoft's text
#: streaming sample raises these so that slow LLM input does not cancel the synthesis.
DEFAULT_PROPERTIES: Mapping[str, str] = {
    "SpeechSynthesis_FrameTimeoutInterval": "100000000",
    "SpeechSynthesis_RtfTimeoutThreshold": "10",
}
T = TypeVar("T")
_ids = itertools.count(1)


def sdk_installed() -> bool:
    """Whether the Speech SDK can be imported (without importing its native library)."""
    try:
        return importlib.util.find_spec(SDK_MODULE) is not None
    except (ImportError, ValueError):
        return False


def load_sdk() -> Any:
    """Import the Speech SDK (loads its native library); a ConfigError if it is missing."""
    try:
        return importlib.import_module(SDK_MODULE)
    except ImportError as exc:
        raise ConfigError(f"the Azure Speech SDK is not installed; {INSTALL_HINT}") from exc


def ws_endpoint(*, region: str | None = None, endpoint: str | None = None) -> str:
    """The v2 WebSocket endpoint text streaming needs, for a region or a given endpoint.

    An endpoint given as an origin (``ws://127.0.0.1:PORT``) gets the v2 path appended.
    """
    if endpoint:
        if not endpoint.startswith(("wss://", "ws://")):
            raise ConfigError(
                "Azure SDK endpoint must be a WebSocket URL such as 'wss://westus.tts.speech."
                f"microsoft.com{az.WS_V2_PATH}' (ws://127.0.0.1:PORT/... for a local fake), "
                f"got {endpoint!r}"
            )
        scheme, rest = endpoint.split("://", 1)
        if "/" not in rest.rstrip("/"):  # an origin: text streaming needs the v2 path
            return f"{scheme}://{rest.rstrip('/')}{az.WS_V2_PATH}"
        return endpoint
    rest = az.build_url(region=region)  # validates the region, explains a missing one
    host = rest.split("://", 1)[1].split("/", 1)[0]
    return f"wss://{host}{az.WS_V2_PATH}"


@dataclass(frozen=True, slots=True)
class SdkSettings:
    """Everything the worker thread needs to build a synthesizer."""

    endpoint: str
    key: str | None
    token: str | None
    voice: az.Voice
    output_format: az.OutputFormat
    properties: Mapping[str, str]
    deployment_id: str | None = None
    word_boundaries: bool = False


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class _Started:
    result_id: str


@dataclass(frozen=True, slots=True)
class _Audio:
    result_id: str
    data: bytes


@dataclass(frozen=True, slots=True)
class _Done:
    result_id: str
    error: tuple[str, str, str] | None  # (reason, error code, details) if cancelled


@dataclass(frozen=True, slots=True)
class _Connected:
    up: bool


@dataclass(frozen=True, slots=True)
class _Word:
    """A word boundary: seconds from the start of the request's audio."""

    result_id: str
    word: str
    start: float
    end: float


def _name(value: object) -> str:
    return str(getattr(value, "name", value))


# --------------------------------------------------------------------------- the thread


@dataclass
class _Native:
    """The SDK objects of one synthesizer. Touched on its worker thread only."""

    sdk: Any = None
    config: Any = None
    synth: Any = None
    connection: Any = None
    signals: list[Any] = field(default_factory=list)
    requests: dict[int, list[Any]] = field(default_factory=dict)  # rid -> [request, future]
    spoken: int = 0  # requests given to speak_async()
    unreaped: deque[int] = field(default_factory=deque)  # spoken, result not taken, in order
    open: set[int] = field(default_factory=set)  # rids whose input stream is open


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class SdkWorker:
    """One Speech SDK synthesizer and the one thread that makes all of its calls.

    Loop side: :meth:`call` runs a function of the native objects on the thread and waits
    for it within a deadline; events arrive via :meth:`attach`'s channel. ``connected``
    and ``stuck`` are only read and written on the event loop.
    """

    def __init__(self, tts: AzureSdkTTS, loop: asyncio.AbstractEventLoop) -> None:
        self.id = next(_ids)
        self._tts = tts
        self._loop = loop
        self._jobs: queue.SimpleQueue[Callable[[_Native], None] | None] = queue.SimpleQueue()
        self._native = _Native()
        self._done_cv = threading.Condition()
        self._done_count = 0  # done events so far (guarded by _done_cv)
        self._thread = threading.Thread(target=self._main, name=f"azure-sdk-{self.id}", daemon=True)
        self._exited: asyncio.Future[None] = loop.create_future()
        self._sink: Channel[object] | None = None
        self._close_steps: list[tuple[asyncio.Future[Any], str]] | None = None
        self._close_deadline = 0.0
        self.connected = False
        self.up = asyncio.Event()  # mirrors ``connected``, to wait for it
        self.stuck: str | None = None
        self.begun = 0
        self.done = 0
        self.dropped_events = 0

    def __repr__(self) -> str:
        return f"<SdkWorker #{self.id} connected={self.connected} stuck={self.stuck}>"

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    @property
    def reusable(self) -> bool:
        """Healthy and idle: nothing outstanding, not closing, no call hanging."""
        return (
            self.stuck is None
            and self._close_steps is None
            and self.begun == self.done
            and self._thread.is_alive()
        )

    # -- from other threads
    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody listens any more
            self._loop.call_soon_threadsafe(fn, *args)

    def _count_done(self) -> None:
        with self._done_cv:
            self._done_count += 1
            self._done_cv.notify_all()

    def _main(self) -> None:
        native = self._native
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    break
                job(native)
        finally:
            _drop(native)  # normally done by the close steps already; idempotent
            self._post(_settle, self._exited, None, None)

    def _callbacks(self) -> dict[str, Callable[[Any], None]]:
        """SDK event handlers: they run on the SDK's threads and only hand events over."""
        post = self._post

        def started(evt: Any) -> None:
            with contextlib.suppress(Exception):
                post(self._deliver, _Started(str(evt.result.result_id)))

        def audio(evt: Any) -> None:
            with contextlib.suppress(Exception):
                r = evt.result
                post(self._deliver, _Audio(str(r.result_id), bytes(r.audio_data)))

        def completed(evt: Any) -> None:
            with contextlib.suppress(Exception):
                self._count_done()
                post(self._deliver, _Done(str(evt.result.result_id), None))

        def canceled(evt: Any) -> None:
            with contextlib.suppress(Exception):
                self._count_done()
                r = evt.result
                d = r.cancellation_details
                info = (_name(d.reason), _name(d.error_code), str(d.error_details or ""))
                post(self._deliver, _Done(str(r.result_id), info))

        def word(evt: Any) -> None:
            with contextlib.suppress(Exception):
                if _name(evt.boundary_type) != "Word":
                    return  # punctuation and sentence boundaries
                start = evt.audio_offset / 10_000_000  # 100 ns ticks
                duration = evt.duration
                seconds = (
                    duration.total_seconds()
                    if hasattr(duration, "total_seconds")
                    else float(duration) / 10_000_000
                )
                item = _Word(str(evt.result_id), str(evt.text), start, start + seconds)
                post(self._deliver, item)

        def connected(evt: Any) -> None:
            post(self._deliver, _Connected(True))

        def disconnected(evt: Any) -> None:
            post(self._deliver, _Connected(False))

        return {
            "started": started,
            "audio": audio,
            "completed": completed,
            "canceled": canceled,
            "connected": connected,
            "disconnected": disconnected,
            "word": word,
        }

    # -- loop side
    def _deliver(self, event: object) -> None:
        if isinstance(event, _Connected):
            self.connected = event.up
            if event.up:
                self.up.set()
            else:
                self.up.clear()
        elif isinstance(event, _Done):
            self.done += 1
        sink = self._sink
        if sink is None or sink.closed:
            self.dropped_events += 1  # between streams, or after close: nobody's
            return
        with contextlib.suppress(ChannelClosed):
            sink.send_nowait(event)

    def attach(self, sink: Channel[object]) -> None:
        """Send this synthesizer's events to ``sink`` (a stream's mailbox)."""
        self._sink = sink

    def detach(self) -> None:
        self._sink = None

    def submit(self, fn: Callable[[_Native], T]) -> asyncio.Future[T]:
        """Run ``fn(native)`` on the worker thread; the future resolves on the loop."""
        fut: asyncio.Future[T] = self._loop.create_future()
        fut.add_done_callback(_retrieve)  # a caller that gave up must not log noise

        def job(native: _Native) -> None:
            try:
                result = fn(native)
            except BaseException as exc:
                self._post(_settle, fut, None, exc)
            else:
                self._post(_settle, fut, result, None)

        self._jobs.put(job)
        return fut

    async def call(self, fn: Callable[[_Native], T], *, what: str, stage: str, timeout: float) -> T:
        """``fn(native)`` on the worker thread within ``timeout`` seconds, errors typed."""
        if self.stuck is not None:
            raise ProviderError(
                f"the Speech SDK has not returned from {self.stuck}",
                provider=PROVIDER,
                stage=stage,
                hint="the synthesizer was abandoned; the stream cannot continue on it",
            )
        fut = self.submit(fn)
        done, _ = await asyncio.wait([fut], timeout=timeout)
        if not done:
            self.stuck = what
            raise ProviderTimeoutError(
                f"the Speech SDK did not return from {what}",
                provider=PROVIDER,
                stage=stage,
                timeout=timeout,
                hint="the synthesizer is abandoned and closed in the background",
            )
        try:
            return fut.result()
        except ProviderError:
            raise
        except Exception as exc:
            raise ProviderError(
                f"the Speech SDK failed in {what}: {exc}",
                provider=PROVIDER,
                stage=stage,
                hint="see the SDK's message; check the voice, output format and endpoint",
            ) from exc

    async def start(self, settings: SdkSettings, *, timeout: float) -> None:
        """Start the thread and build the config and synthesizer there."""
        self._thread.start()
        callbacks = self._callbacks()
        sdk_module = self._tts._sdk_module

        def build(native: _Native) -> None:
            _build(native, sdk_module, settings, callbacks)

        await self.call(build, what="creating the synthesizer", stage="connect", timeout=timeout)

    async def begin(self, rid: int, voice: az.Voice, *, timeout: float) -> None:
        """A new text-stream request, spoken after the ones before it."""

        def begin(native: _Native) -> None:
            sdk = native.sdk
            request = sdk.SpeechSynthesisRequest(
                input_type=sdk.SpeechSynthesisRequestInputType.TextStream
            )
            for attr in ("rate", "pitch", "volume", "style"):
                value = getattr(voice, attr)
                if value is not None:
                    setattr(request, attr, value)
            future = native.synth.speak_async(request)
            native.requests[rid] = [request, future]
            native.spoken += 1
            native.unreaped.append(rid)
            native.open.add(rid)

        self.begun += 1
        try:
            await self.call(begin, what="speak_async()", stage="connect", timeout=timeout)
        except ProviderError:
            self.stuck = self.stuck or "speak_async()"  # a done event may never come
            raise

    async def write(self, rid: int, text: str, *, timeout: float) -> None:
        def write(native: _Native) -> None:
            native.requests[rid][0].input_stream.write(text)

        await self.call(write, what="input_stream.write()", stage="send", timeout=timeout)

    async def finish(self, rid: int, *, timeout: float) -> None:
        def finish(native: _Native) -> None:
            native.open.discard(rid)
            native.requests[rid][0].input_stream.close()

        await self.call(finish, what="input_stream.close()", stage="send", timeout=timeout)

    async def reap(self, rid: int, *, timeout: float) -> None:
        """Take the result of a finished request (``get()``) and drop the request."""

        def reap(native: _Native) -> None:
            entry = native.requests.pop(rid, None)
            if entry is None:
                return
            if native.unreaped and native.unreaped[0] == rid:
                native.unreaped.popleft()
            else:
                native.unreaped.remove(rid)
            request, future = entry
            future.get()
            _unlink(request)

        await self.call(reap, what="ResultFuture.get()", stage="close", timeout=timeout)

    async def aclose(self, *, result_wait: float = 0.0) -> bool:
        """Stop and release the synthesizer on its thread, then join the thread.

        Idempotent and safe to call from several tasks; returns within ``result_wait``
        plus ``deadlines.close`` (True if the thread ended in time). Cancelling a caller
        does not stop the sequence: the thread carries it out regardless.
        """
        self._sink = None
        d = self._tts.deadlines
        if self._close_steps is None:
            self._close_deadline = self._loop.time() + result_wait + d.close
            if not self._thread.is_alive() and not self._thread.ident:
                self._close_steps = []
                _settle(self._exited, None, None)
                return True
            cv = self._done_cv
            wait_until = time.monotonic() + result_wait

            def wait_results(native: _Native) -> None:
                with cv:
                    cv.wait_for(
                        lambda: self._done_count >= native.spoken,
                        timeout=max(0.0, wait_until - time.monotonic()),
                    )

            def stop(native: _Native) -> None:
                with cv:
                    outstanding = self._done_count < native.spoken
                if outstanding and native.synth is not None:
                    native.synth.stop_speaking_async().get()

            deadline_mono = time.monotonic() + result_wait + d.close

            def reap_all(native: _Native) -> None:
                with cv:
                    cv.wait_for(
                        lambda: self._done_count >= native.spoken,
                        timeout=max(0.0, deadline_mono - time.monotonic()) / 2,
                    )
                    finished = min(self._done_count, native.spoken)
                # Requests finish in the order they were spoken: the oldest are done.
                reaped = native.spoken - len(native.unreaped)
                for _ in range(max(0, finished - reaped)):
                    entry = native.requests.pop(native.unreaped.popleft(), None)
                    if entry is not None:
                        entry[1].get()
                        _unlink(entry[0])
                # Requests that never finished keep a native handle the SDK cannot free
                # without blocking forever; they are dropped with the synthesizer.

            self._close_steps = [
                (self.submit(_close_inputs), "input_stream.close()"),
                (self.submit(wait_results), "waiting for the result"),
                (self.submit(stop), "stop_speaking_async().get()"),
                (self.submit(reap_all), "ResultFuture.get()"),
                (self.submit(_disconnect), "disconnect_all()"),
                (self.submit(_drop), "releasing the native objects"),
            ]
            self._jobs.put(None)
        for fut, what in self._close_steps:
            remaining = self._close_deadline - self._loop.time()
            done, _ = await asyncio.wait([fut], timeout=max(0.0, remaining))
            if not done:
                log.error(
                    "azure sdk worker #%d: %s did not return within the close deadline; "
                    "the thread finishes the close by itself if it ever returns",
                    self.id,
                    self.stuck or what,
                )
                return False
            if not fut.cancelled() and fut.exception() is not None:
                log.warning("azure sdk worker #%d: %s failed: %r", self.id, what, fut.exception())
        return await self._join()

    async def _join(self) -> bool:
        remaining = max(0.0, self._close_deadline - self._loop.time())
        done, _ = await asyncio.wait([self._exited], timeout=remaining)
        # The thread has posted its exit and is past its last statement: a few polls at
        # most, where a blocking join() could stall the loop.
        while done and self._thread.is_alive() and self._loop.time() < self._close_deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        if self._thread.is_alive():
            log.error("azure sdk worker #%d: the thread did not end in time", self.id)
            return False
        self._thread.join(0)
        return True


def _build(
    native: _Native, sdk_module: Any, settings: SdkSettings, callbacks: dict[str, Any]
) -> None:
    sdk = sdk_module if sdk_module is not None else load_sdk()
    native.sdk = sdk
    if settings.key is not None:
        config = sdk.SpeechConfig(subscription=settings.key, endpoint=settings.endpoint)
    else:
        config = sdk.SpeechConfig(endpoint=settings.endpoint)
        config.authorization_token = settings.token
    native.config = config
    if settings.deployment_id is not None:
        config.endpoint_id = settings.deployment_id
    config.speech_synthesis_voice_name = settings.voice.name
    config.speech_synthesis_language = settings.voice.locale
    config.set_speech_synthesis_output_format(
        getattr(sdk.SpeechSynthesisOutputFormat, settings.output_format.sdk_name)
    )
    for name, value in settings.properties.items():
        config.set_property(getattr(sdk.PropertyId, name), value)
    synth = sdk.SpeechSynthesizer(speech_config=config, audio_config=None)
    native.synth = synth
    connection = sdk.Connection.from_speech_synthesizer(synth)
    native.connection = connection
    for signal, handler in (
        (synth.synthesis_started, callbacks["started"]),
        (synth.synthesizing, callbacks["audio"]),
        (synth.synthesis_completed, callbacks["completed"]),
        (synth.synthesis_canceled, callbacks["canceled"]),
        (connection.connected, callbacks["connected"]),
        (connection.disconnected, callbacks["disconnected"]),
        *([(synth.synthesis_word_boundary, callbacks["word"])] if settings.word_boundaries else []),
    ):
        signal.connect(handler)  # a word-boundary handler makes the SDK ask for them
        native.signals.append(signal)


def _close_inputs(native: _Native) -> None:
    for rid in sorted(native.open):
        native.open.discard(rid)
        native.requests[rid][0].input_stream.close()


def _disconnect(native: _Native) -> None:
    signals, native.signals = native.signals, []
    for signal in signals:
        signal.disconnect_all()


def _unlink(request: Any) -> None:
    """Break the request <-> input stream cycle so the request is freed right here."""
    stream = getattr(request, "input_stream", None)
    if stream is not None and hasattr(stream, "_InputStream__parent"):
        stream._InputStream__parent = None


def _drop(native: _Native) -> None:
    """Release every native object now, on this (the worker) thread."""
    _disconnect(native)
    for request, _future in native.requests.values():
        _unlink(request)
    native.requests.clear()
    native.open.clear()
    native.connection = None
    native.synth = None
    native.config = None
    native.sdk = None


# --------------------------------------------------------------------------- plugin


class AzureSdkTTS(TTS):
    """Azure Speech TTS with text streaming through the Speech SDK.

    Credentials: ``api_key`` (default ``$AZURE_SPEECH_KEY``) or ``auth_token`` (a bearer
    token; it expires after 10 minutes). ``region`` (default ``$AZURE_SPEECH_REGION``)
    gives the v2 endpoint text streaming needs; ``endpoint`` replaces it;
    ``deployment_id`` selects a custom voice deployment (``endpoint_id``). ``voice``,
    ``language``, ``style``, ``rate``, ``pitch``, ``volume`` as for
    :class:`~antiphon.plugins.azure.AzureTTS` (``style_degree`` and ``role`` are not
    available with text streaming). Output is raw PCM, mu-law or a-law (``encoding``,
    ``sample_rate`` or ``output_format``). ``properties`` are extra ``SpeechConfig``
    properties by ``PropertyId`` name. ``max_idle``: synthesizers kept warm for reuse.
    ``sdk``: a stand-in for the ``azure.cognitiveservices.speech`` module (tests).
    ``word_boundaries``: ask for the SDK's word boundaries (``synthesis_word_boundary``)
    and surface them as the streams' ``words``.
    """

    provider = PROVIDER

    def __init__(
        self,
        *,
        api_key: str | None = None,
        auth_token: str | None = None,
        region: str | None = None,
        endpoint: str | None = None,
        deployment_id: str | None = None,
        voice: str | az.Voice = az.DEFAULT_VOICE,
        language: str | None = None,
        style: str | None = None,
        rate: str | None = None,
        pitch: str | None = None,
        volume: str | None = None,
        encoding: str = "linear16",
        sample_rate: int | None = None,
        output_format: str | None = None,
        properties: Mapping[str, str] | None = None,
        deadlines: TTSDeadlines | None = None,
        max_idle: int = 2,
        sdk: Any = None,
        word_boundaries: bool = False,
    ) -> None:
        if sdk is None and not sdk_installed():
            raise ConfigError(f"AzureSdkTTS needs the Azure Speech SDK; {INSTALL_HINT}")
        if output_format is not None:
            fmt = az.resolve_output_format(output_format)
            if sample_rate is not None and sample_rate != fmt.sample_rate:
                raise ConfigError(
                    f"output_format {fmt.name!r} is {fmt.sample_rate} Hz but sample_rate="
                    f"{sample_rate} was given; drop one of them"
                )
        else:
            fmt = az.output_format_for(encoding, sample_rate or 24000)
        if fmt.container != "raw":
            raise ConfigError(
                f"AzureSdkTTS streams raw audio; use {fmt.name.replace('riff-', 'raw-')!r} "
                f"instead of {fmt.name!r}"
            )
        if isinstance(voice, az.Voice):
            if voice.style_degree is not None or voice.role is not None:
                raise ConfigError(
                    "style_degree and role are not available with SDK text streaming; use "
                    "AzureTTS (REST, SSML) for them"
                )
            extras = (language, style, rate, pitch, volume)
            if any(v is not None for v in extras):
                raise ConfigError("pass either a Voice object or voice settings, not both")
            the_voice = voice
        else:
            the_voice = az.Voice(voice, language, style, None, None, rate, pitch, volume)
        if max_idle < 0:
            raise ConfigError("max_idle must be >= 0")
        if endpoint is None:
            region = region if region is not None else os.environ.get(az.REGION_ENV)
        if auth_token is not None:
            if not auth_token.strip():
                raise ConfigError("auth_token is empty; pass a bearer token or use api_key")
            key, token = None, auth_token.strip()
        else:
            key, token = resolve_key(api_key, what="AzureSdkTTS"), None
        props = dict(DEFAULT_PROPERTIES)
        props.update(properties or {})
        self.settings = SdkSettings(
            endpoint=ws_endpoint(region=region, endpoint=endpoint),
            key=key,
            token=token,
            voice=the_voice,
            output_format=fmt,
            properties=props,
            deployment_id=deployment_id,
            word_boundaries=word_boundaries,
        )
        self.word_timings = word_boundaries
        self.output_format = fmt
        self.voice = the_voice
        self.max_idle = max_idle
        self._sdk_module = sdk
        self._workers: set[SdkWorker] = set()
        self._idle: list[SdkWorker] = []
        super().__init__(sample_rate=fmt.sample_rate, channels=1, deadlines=deadlines)

    @property
    def workers(self) -> frozenset[SdkWorker]:
        """Synthesizers alive now (in use, idle or closing)."""
        return frozenset(self._workers)

    async def _acquire(self) -> SdkWorker:
        while self._idle:
            worker = self._idle.pop()
            if worker.reusable:
                return worker
            self._close_later(worker)
        worker = SdkWorker(self, asyncio.get_running_loop())
        self._workers.add(worker)
        try:
            await worker.start(self.settings, timeout=self.deadlines.connect)
        except BaseException:
            self._close_later(worker)
            raise
        return worker

    def _return(self, worker: SdkWorker, *, reusable: bool) -> None:
        if reusable and worker.reusable and not self.closed and len(self._idle) < self.max_idle:
            self._idle.append(worker)
        else:
            self._close_later(worker)

    def _close_later(self, worker: SdkWorker) -> None:
        # If the TTS is closing, _aclose_resources closes every worker.
        with contextlib.suppress(StreamClosedError):
            self._tasks.spawn(self._close_worker(worker), name=f"close-sdk#{worker.id}")

    async def _close_worker(self, worker: SdkWorker) -> None:
        if await worker.aclose():
            self._workers.discard(worker)

    async def prewarm(self) -> None:
        """Create a synthesizer and open its connection ahead of the first stream."""
        worker = await self._acquire()
        try:
            if not worker.connected:
                timeout = self.deadlines.connect
                await worker.call(
                    lambda n: n.connection.open(False),
                    what="Connection.open()",
                    stage="connect",
                    timeout=timeout,
                )
                try:
                    async with asyncio.timeout(timeout):
                        await worker.up.wait()
                except TimeoutError:
                    raise ProviderTimeoutError(
                        "could not connect to the Speech service",
                        provider=PROVIDER,
                        stage="connect",
                        timeout=timeout,
                        hint=f"is {self.settings.endpoint} reachable?",
                    ) from None
        except BaseException:
            self._return(worker, reusable=False)
            raise
        self._return(worker, reusable=True)

    def _new_stream(self, generation: int) -> AzureSdkSynthesisStream:
        return AzureSdkSynthesisStream(self, generation)

    async def _aclose_resources(self) -> None:
        self._idle.clear()
        workers = list(self._workers)
        results = await asyncio.gather(*(w.aclose() for w in workers))
        for worker, ok in zip(workers, results, strict=True):
            if ok:
                self._workers.discard(worker)


@dataclass
class _Request:
    rid: int
    journal: list[str] = field(default_factory=list)
    closed: bool = False
    result_id: str | None = None
    heard: bool = False
    replayed: bool = False
    begun: bool = False  # handed to the SDK (one request at a time, see _begin)
    audio_at: float | None = None  # the stream's audio seconds where this request's begin


class AzureSdkSynthesisStream(SynthesisStream):
    """One synthesis on a synthesizer of an :class:`AzureSdkTTS`."""

    def __init__(self, tts: AzureSdkTTS, generation: int) -> None:
        self._tts = tts
        self._worker: SdkWorker | None = None
        self._carry = b""
        self._rids = itertools.count(1)
        super().__init__(
            provider=tts.provider,
            sample_rate=tts.sample_rate,
            channels=1,
            generation=generation,
            owner=tts._tasks,
            close_timeout=tts.deadlines.close,
            word_timings=tts.word_timings,
        )

    async def _run(self) -> None:
        ok = False
        try:
            await self._loop()
            ok = True
        finally:
            worker, self._worker = self._worker, None
            if worker is not None:
                worker.detach()
                self._tts._return(worker, reusable=ok)

    async def _worker_for_stream(self) -> SdkWorker:
        if self._worker is None:
            worker = await self._tts._acquire()
            self._worker = worker
            worker.attach(self._mailbox)
        return self._worker

    async def _begin(self, reqs: deque[_Request], journal: list[str]) -> _Request:
        """A new request; handed to the SDK now only if no other one is in flight.

        The SDK may run queued requests on several connections at once and its events do
        not say which request they belong to, so audio order is kept by construction:
        the next request starts when the previous one is done (see :meth:`_start`).
        """
        req = _Request(next(self._rids), journal=list(journal))
        reqs.append(req)
        if len(reqs) == 1:
            await self._start(req)
        return req

    async def _start(self, req: _Request) -> None:
        worker = await self._worker_for_stream()
        req.begun = True
        await worker.begin(req.rid, self._tts.voice, timeout=self._tts.deadlines.connect)
        if req.journal:
            await worker.write(req.rid, "".join(req.journal), timeout=self._tts.deadlines.idle)
        if req.closed:
            await worker.finish(req.rid, timeout=self._tts.deadlines.idle)

    async def _loop(self) -> None:
        tts = self._tts
        d = tts.deadlines
        loop = asyncio.get_running_loop()
        reqs: deque[_Request] = deque()  # spoken and not finished, oldest first
        open_req: _Request | None = None
        pending_space = ""
        ended = False
        progress = loop.time()
        connect_since: float | None = None
        while True:
            worker = self._worker
            when: float | None = None
            timeout = 0.0
            stage = message = ""
            if worker is not None and reqs:
                if not worker.connected:
                    if connect_since is None:
                        connect_since = loop.time()
                    when, timeout, stage = connect_since + d.connect, d.connect, "connect"
                    message = "could not connect to the Speech service"
                elif reqs[0].closed:
                    heard = reqs[0].heard
                    timeout = d.idle if heard else d.first_audio
                    when, stage = progress + timeout, "receive"
                    message = (
                        "audio stopped before the synthesis finished"
                        if heard
                        else "no audio after the text was sent"
                    )
            try:
                async with asyncio.timeout_at(when):
                    item = await self._mailbox.recv()
            except TimeoutError:
                raise ProviderTimeoutError(
                    message,
                    provider=self.provider,
                    stage=stage,
                    timeout=timeout,
                    hint="the synthesizer is stopped and closed",
                ) from None
            if isinstance(item, TextInput):
                text = item.text
                if open_req is None:
                    if not text.strip():
                        pending_space += text
                        continue
                    text, pending_space = pending_space + text, ""
                    open_req = await self._begin(reqs, [])
                open_req.journal.append(text)
                if open_req.begun:
                    assert self._worker is not None
                    await self._worker.write(open_req.rid, text, timeout=d.idle)
            elif isinstance(item, FlushInput | EndInput):
                if open_req is not None:
                    open_req.closed = True
                    if reqs[0] is open_req:
                        progress = loop.time()
                    if open_req.begun:
                        assert self._worker is not None
                        await self._worker.finish(open_req.rid, timeout=d.idle)
                    open_req = None
                if isinstance(item, EndInput):
                    ended = True
                if ended and not reqs:
                    return self._end_audio()
            elif isinstance(item, _Connected):
                # Lost between requests: the clock starts when the next one begins.
                connect_since = None if item.up or not reqs else loop.time()
            elif isinstance(item, _Started):
                for req in reqs:
                    if req.begun and req.result_id is None:
                        req.result_id = item.result_id
                        break
            elif isinstance(item, _Audio):
                head = reqs[0] if reqs else None
                if head is None or (head.result_id not in (None, item.result_id)):
                    metrics.TTS_DROPPED_MESSAGES.labels(self.provider, "stale").inc()
                    continue
                if not head.heard:
                    metrics.TTS_TTFB.labels(self.provider).observe(loop.time() - progress)
                    if head.audio_at is None:
                        head.audio_at = self.audio_seconds
                head.heard = True
                progress = loop.time()
                self._deliver(item.data)
            elif isinstance(item, _Word):
                head = reqs[0] if reqs else None
                if head is None or head.result_id != item.result_id:
                    continue  # of a request already finished or not ours
                if head.audio_at is None:  # before its audio: the earlier ones are all out
                    head.audio_at = self.audio_seconds
                word = WordTiming(item.word, item.start, item.end)
                self._emit_words((word,), head.audio_at)
            elif isinstance(item, _Done):
                if not reqs:
                    continue
                head = reqs.popleft()
                assert self._worker is not None
                await self._reap(self._worker, head)
                progress = loop.time()
                if item.error is not None:
                    replacement = await self._recover(head, item.error, reqs, open_req)
                    if replacement is not None and head is open_req:
                        open_req = replacement
                    if replacement is not None:
                        # A replay is a new attempt: it gets its own connect deadline.
                        connect_since = None
                        continue
                if head is open_req:  # finished while still open: nothing more to say
                    open_req = None
                if ended and not reqs:
                    return self._end_audio()
                if reqs and not reqs[0].begun:
                    await self._start(reqs[0])
                    progress = loop.time()

    async def _reap(self, worker: SdkWorker, req: _Request) -> None:
        try:
            await worker.reap(req.rid, timeout=self._tts.deadlines.close)
        except ProviderError as exc:
            # The audio is complete; the synthesizer is not trusted again.
            log.warning("%s: %s", self.provider, exc)

    async def _recover(
        self,
        head: _Request,
        error: tuple[str, str, str],
        reqs: deque[_Request],
        open_req: _Request | None,
    ) -> _Request | None:
        """Replay a request that failed before any of its audio, once; else raise."""
        reason, code, details = error
        worker = self._worker
        assert worker is not None
        if reason == "CancelledByUser":
            raise ProviderError(
                f"the synthesis was stopped: {' '.join(details.split())[:200]}",
                provider=self.provider,
                stage="receive",
            )
        stage = "connect" if not head.heard and not worker.connected else "receive"
        exc = az.sdk_error(code, details, stage=stage)
        if not exc.retryable or head.heard or head.replayed or reqs:
            raise exc
        log.info("%s: %s; replaying the request", self.provider, exc)
        journal = head.journal
        replacement = _Request(next(self._rids), journal=list(journal), replayed=True)
        replacement.closed = head.closed
        reqs.append(replacement)
        await self._start(replacement)
        return replacement

    def _deliver(self, data: bytes) -> None:
        encoding = self._tts.output_format.encoding
        if encoding == "linear16":
            if self._carry:
                data = self._carry + data
                self._carry = b""
            if len(data) % 2:
                data, self._carry = data[:-1], data[-1:]
        else:
            data = decode_to_pcm(encoding, data)
        if data:
            self._emit(AudioFrame(data, self.sample_rate, 1, self.generation))

    def _end_audio(self) -> None:
        if self._carry:
            log.warning("%s: dropped a trailing odd byte of 16-bit audio", self.provider)
            self._carry = b""
