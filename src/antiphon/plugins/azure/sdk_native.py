"""The native objects of one Speech SDK synthesizer and the steps that build and free them.

How it is built: :class:`Native` holds every SDK object of one synthesizer (config,
synthesizer, connection, connected signals, open requests and their result futures);
:func:`build_native` creates them and connects the event handlers, and
:func:`close_inputs`, :func:`disconnect_signals`, :func:`unlink_request` and
:func:`drop_native` are the release steps of the close sequence. Every function here runs
on the synthesizer's worker thread only (:class:`~antiphon.plugins.azure.sdk_worker.SdkWorker`
submits them), never on the event loop. Why a module of its own: it is the one place that
touches the native library, apart from the thread that schedules those calls.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from antiphon.plugins.azure.sdk import SdkSettings

__all__ = [
    "Native",
    "build_native",
    "close_inputs",
    "disconnect_signals",
    "drop_native",
    "unlink_request",
]


@dataclass
class Native:
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


def build_native(
    native: Native, sdk_module: Any, settings: SdkSettings, callbacks: dict[str, Any]
) -> None:
    """Create the config, synthesizer and connection of ``settings`` and connect ``callbacks``."""
    # The plugin module imports this one; its load_sdk is looked up when a synthesizer is built.
    from antiphon.plugins.azure.sdk import load_sdk

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


def close_inputs(native: Native) -> None:
    for rid in sorted(native.open):
        native.open.discard(rid)
        native.requests[rid][0].input_stream.close()


def disconnect_signals(native: Native) -> None:
    signals, native.signals = native.signals, []
    for signal in signals:
        signal.disconnect_all()


def unlink_request(request: Any) -> None:
    """Break the request <-> input stream cycle so the request is freed right here."""
    stream = getattr(request, "input_stream", None)
    if stream is not None and hasattr(stream, "_InputStream__parent"):
        stream._InputStream__parent = None


def drop_native(native: Native) -> None:
    """Release every native object now, on this (the worker) thread."""
    disconnect_signals(native)
    for request, _future in native.requests.values():
        unlink_request(request)
    native.requests.clear()
    native.open.clear()
    native.connection = None
    native.synth = None
    native.config = None
    native.sdk = None
