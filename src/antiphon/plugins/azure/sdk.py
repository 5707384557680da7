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

How it is built: this module is the plugin (:class:`AzureSdkTTS`: settings, the pool of
idle synthesizers, prewarm) and the SDK's import; the worker thread and its close
sequence are :mod:`~antiphon.plugins.azure.sdk_worker`, the native objects and their
release steps :mod:`~antiphon.plugins.azure.sdk_native`, the events the worker posts
:mod:`~antiphon.plugins.azure.sdk_events`, the stream
:mod:`~antiphon.plugins.azure.sdk_stream`, and the TCP probe that learns of a refused
connection the SDK may not report :mod:`~antiphon.net.probe`. :class:`SdkWorker` and
:class:`AzureSdkSynthesisStream` are re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from antiphon.errors import (
    ConfigError,
    ProviderConnectionError,
    ProviderTimeoutError,
    StreamClosedError,
)
from antiphon.net.probe import endpoint_address, refused
from antiphon.plugins.azure.sdk_stream import AzureSdkSynthesisStream
from antiphon.plugins.azure.sdk_worker import SdkWorker
from antiphon.plugins.azure.tts import resolve_key
from antiphon.protocols import azure_tts as az
from antiphon.services.tts import TTS, TTSDeadlines

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

PROVIDER = az.PROVIDER
SDK_MODULE = "azure.cognitiveservices.speech"
INSTALL_HINT = "install the Speech SDK with: pip install 'antiphon[azure]'"
#: SpeechConfig properties set by default (``PropertyId`` names): Microsoft's text
#: streaming sample raises these so that slow LLM input does not cancel the synthesis.
DEFAULT_PROPERTIES: Mapping[str, str] = {
    "SpeechSynthesis_FrameTimeoutInterval": "100000000",
    "SpeechSynthesis_RtfTimeoutThreshold": "10",
}


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

    While a synthesizer connects, the plugin also opens (and at once closes) one TCP
    connection to the endpoint's host and port, so that a refused connection fails the
    stream at once even when the SDK drops its report (see
    :mod:`~antiphon.net.probe`); not with a proxy nor with ``sdk``.
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
        proxied = any(name.startswith("SpeechServiceConnection_Proxy") for name in props)
        #: Where the probe checks that connections are not refused (None: no probe; a
        #: stand-in ``sdk`` connects nowhere, a proxy is what the SDK connects to).
        self.probe_target: tuple[str, int] | None = (
            None if sdk is not None or proxied else endpoint_address(self.settings.endpoint)
        )
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
                        why = await self.probe(worker)
                        if why is not None:
                            raise self.refused_error(why)
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

    async def probe(self, worker: SdkWorker) -> str | None:
        """Why the endpoint refuses connections, if it does and ``worker`` is not connected.

        Unbounded by itself: the caller's connect deadline bounds it.
        """
        if self.probe_target is None or worker.connected:
            return None
        why = await refused(*self.probe_target)
        return None if worker.connected else why

    def refused_error(self, details: str) -> ProviderConnectionError:
        """The error of a connection the endpoint refused (the probe's ``details``)."""
        return ProviderConnectionError(
            f"the connection was refused: {details}",
            provider=PROVIDER,
            stage="connect",
            hint=f"nothing accepts connections at {self.settings.endpoint}; check the "
            "endpoint or region, and that the service is running",
            retryable=True,
        )

    def _new_stream(self, generation: int) -> AzureSdkSynthesisStream:
        return AzureSdkSynthesisStream(self, generation)

    async def _aclose_resources(self) -> None:
        self._idle.clear()
        workers = list(self._workers)
        results = await asyncio.gather(*(w.aclose() for w in workers))
        for worker, ok in zip(workers, results, strict=True):
            if ok:
                self._workers.discard(worker)
