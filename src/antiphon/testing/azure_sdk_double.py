"""A test double of the Azure Speech SDK's synthesis classes.

``SdkDouble().module`` stands in for ``azure.cognitiveservices.speech`` (pass it as
``AzureSdkTTS(sdk=...)``): ``SpeechConfig``, ``SpeechSynthesizer`` (``speak_async``,
``stop_speaking_async``, the ``synthesis_*``/``synthesizing`` signals),
``SpeechSynthesisRequest`` with a text-stream ``input_stream``, ``Connection`` and the
enums the plugin uses. A background "native" thread per synthesizer plays the service:
when a request's input is closed it fires ``synthesis_started``, ``synthesizing`` with
:func:`~antiphon.testing.azure.synthesize` audio, then ``synthesis_completed`` — from
that thread, as the real SDK calls back from its own threads. With a handler on
``synthesis_word_boundary``, word and punctuation boundaries come ahead of their audio.

Every call is recorded with the thread it ran on (:attr:`SdkDouble.calls`), and every
step can be made to block until released (:meth:`SdkDouble.block`) or to raise
(:meth:`SdkDouble.fail`): ``SpeechConfig``, ``SpeechSynthesizer``, ``speak_async``,
``write``, ``close``, ``get``, ``stop_speaking``, ``disconnect_all``, ``release`` (the
synthesizer's finaliser). Service behaviour: ``silent`` (never answer until stopped),
``cancel_with`` (cancel every request with an error code and details),
``late_callbacks`` (after ``disconnect_all``, fire the removed callbacks once more from
another thread, as a native thread already in flight would).

How it is built: :class:`SdkDouble` holds the controls and records; each synthesizer's
service side is a ``_Core`` with its own thread, which never holds the synthesizer (so
the synthesizer's finaliser runs, as the real SDK's does); ``_make_module`` builds the
SDK's classes as closures over the double. The SDK's enums and data objects are
:mod:`antiphon.testing.azure_sdk_types`, re-exported here.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import types
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from antiphon.protocols import azure_tts as az
from antiphon.testing.azure import synthesize
from antiphon.testing.azure_sdk_types import (
    CancellationDetails,
    CancellationErrorCode,
    CancellationReason,
    PropertyId,
    ResultReason,
    SpeechSynthesisBoundaryType,
    SpeechSynthesisOutputFormat,
    SpeechSynthesisRequestInputType,
    SynthesisEvent,
    SynthesisResult,
    word_boundaries,
)

__all__ = [
    "STEPS",
    "Call",
    "CancellationErrorCode",
    "CancellationReason",
    "PropertyId",
    "ResultReason",
    "SdkDouble",
    "SpeechSynthesisBoundaryType",
    "SpeechSynthesisOutputFormat",
    "SpeechSynthesisRequestInputType",
]

STEPS = (
    "SpeechConfig",
    "SpeechSynthesizer",
    "speak_async",
    "write",
    "close",
    "get",
    "stop_speaking",
    "disconnect_all",
    "release",
)


@dataclass(frozen=True)
class Call:
    """One call into the double: what, and on which thread."""

    name: str
    thread: int
    thread_name: str


class SdkDouble:
    """The controls and records of one double; its ``module`` is what the plugin uses."""

    def __init__(
        self,
        *,
        chunk_bytes: int = 960,
        silent: bool = False,
        cancel_with: tuple[str, str] | None = None,
        late_callbacks: bool = False,
    ) -> None:
        self.chunk_bytes = chunk_bytes
        self.silent = silent
        self.cancel_with = cancel_with
        self.late_callbacks = late_callbacks
        self.calls: list[Call] = []
        self.late_fired = 0
        self.synthesizers: weakref.WeakSet[Any] = weakref.WeakSet()
        self.requests: weakref.WeakSet[Any] = weakref.WeakSet()
        self.configs: weakref.WeakSet[Any] = weakref.WeakSet()
        self.spoken: list[str] = []
        self.request_props: list[dict[str, str]] = []
        """The ``rate``/``pitch``/``volume``/``style`` of each request, when spoken."""
        self._lock = threading.Lock()
        self._gates: dict[str, threading.Event] = {}
        self._entered: dict[str, threading.Event] = {s: threading.Event() for s in STEPS}
        self._failures: dict[str, BaseException] = {}
        self._threads: list[threading.Thread] = []
        self._signals: weakref.WeakSet[_Signal] = weakref.WeakSet()
        self.module = _make_module(self)

    # -- controls
    def block(self, step: str) -> None:
        """Make ``step`` block (as native code that never returns) until :meth:`unblock`."""
        self._check(step)
        self._gates[step] = threading.Event()

    def unblock(self, step: str) -> None:
        gate = self._gates.pop(step, None)
        if gate is not None:
            gate.set()

    def unblock_all(self) -> None:
        for step in list(self._gates):
            self.unblock(step)

    def fail(self, step: str, exc: BaseException) -> None:
        """Make ``step`` raise ``exc`` (as the SDK raises RuntimeError on native errors)."""
        self._check(step)
        self._failures[step] = exc

    def entered(self, step: str, timeout: float = 2.0) -> bool:
        """Wait (blocking, from a test thread) until ``step`` has been called."""
        return self._entered[step].wait(timeout)

    # -- records
    def calls_to(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    def api_threads(self) -> set[int]:
        """The threads that called the SDK's API (callbacks from the double excluded)."""
        return {c.thread for c in self.calls}

    @property
    def connected_callbacks(self) -> int:
        """Callbacks still connected to any signal."""
        return sum(len(s.callbacks) for s in list(self._signals))

    def native_threads(self) -> list[threading.Thread]:
        """The double's own threads (service, late callbacks) still running."""
        return [t for t in self._threads if t.is_alive()]

    # -- internals
    def _check(self, step: str) -> None:
        if step not in STEPS:
            raise ValueError(f"unknown step {step!r}; one of {', '.join(STEPS)}")

    def _step(self, name: str) -> None:
        """Record a call, then block or raise as configured."""
        t = threading.current_thread()
        with self._lock:
            self.calls.append(Call(name, threading.get_ident(), t.name))
        self._entered[name].set()
        gate = self._gates.get(name)
        if gate is not None:
            gate.wait()
        exc = self._failures.get(name)
        if exc is not None:
            raise exc

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _fire_late(self, callbacks: list[Callable[[Any], None]]) -> None:
        def late() -> None:
            threading.Event().wait(0.02)
            evt = SynthesisEvent(
                SynthesisResult("late", ResultReason.SynthesizingAudio, b"\x01\x02" * 480)
            )
            for cb in callbacks:
                with contextlib.suppress(Exception):  # the SDK swallows them too
                    cb(evt)
                with self._lock:
                    self.late_fired += 1

        self._spawn(late, "double-late-callbacks")


class _Signal:
    def __init__(self, double: SdkDouble, name: str) -> None:
        self.double = double
        self.name = name
        self.callbacks: list[Callable[[Any], None]] = []
        double._signals.add(self)

    def connect(self, callback: Callable[[Any], None]) -> None:
        self.callbacks.append(callback)

    def disconnect_all(self) -> None:
        self.double._step("disconnect_all")
        removed, self.callbacks = self.callbacks, []
        if self.double.late_callbacks and removed:
            self.double._fire_late(removed)

    def is_connected(self) -> bool:
        return bool(self.callbacks)

    def signal(self, evt: Any) -> None:
        for cb in list(self.callbacks):
            with contextlib.suppress(Exception):  # the SDK swallows them too
                cb(evt)


@dataclass
class _Pending:
    """A request as the double's service sees it."""

    pieces: list[str]  # the request's text (shared, not the request: no cycle)
    result_id: str
    closed: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    result: SynthesisResult | None = None


class _Core:
    """The service side of one synthesizer; its thread never holds the synthesizer."""

    _ids = itertools.count(1)

    def __init__(self, double: SdkDouble, fmt: az.OutputFormat) -> None:
        self.double = double
        self.fmt = fmt
        self.cond = threading.Condition()
        self.queue: deque[_Pending] = deque()
        self.stopped = False
        self.shutdown = False
        self.running = False
        self.connected_once = False
        self.started = _Signal(double, "synthesis_started")
        self.synthesizing = _Signal(double, "synthesizing")
        self.completed = _Signal(double, "synthesis_completed")
        self.canceled = _Signal(double, "synthesis_canceled")
        self.connected = _Signal(double, "connected")
        self.disconnected = _Signal(double, "disconnected")
        self.word_boundary = _Signal(double, "synthesis_word_boundary")

    def enqueue(self, pending: _Pending) -> None:
        with self.cond:
            self.queue.append(pending)
            self.stopped = False
            if not self.running:
                self.running = True
                self.double._spawn(self._serve, f"double-native-{next(self._ids)}")
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def close_input(self, pending: _Pending) -> None:
        with self.cond:
            pending.closed.set()
            self.cond.notify_all()

    def _finish(self, p: _Pending, error: tuple[CancellationReason, str, str] | None) -> None:
        if error is None:
            p.result = SynthesisResult(p.result_id, ResultReason.SynthesizingAudioCompleted)
            signal = self.completed
        else:
            reason, code, details = error
            d = CancellationDetails(reason, CancellationErrorCode[code], details)
            p.result = SynthesisResult(p.result_id, ResultReason.Canceled, cancellation_details=d)
            signal = self.canceled
        p.done.set()
        signal.signal(SynthesisEvent(p.result))

    def _wait(self, predicate: Callable[[], bool]) -> None:
        with self.cond:
            self.cond.wait_for(lambda: predicate() or self.stopped or self.shutdown)

    def _serve(self) -> None:
        while True:
            with self.cond:
                if not self.queue or self.shutdown:
                    self.running = False
                    for p in self.queue:
                        self._finish(
                            p, (CancellationReason.CancelledByUser, "NoError", "shut down")
                        )
                    self.queue.clear()
                    return
                p = self.queue.popleft()
            self.started.signal(SynthesisEvent(SynthesisResult(p.result_id)))
            if not self.connected_once:
                self.connected_once = True
                self.connected.signal(SynthesisEvent(SynthesisResult("")))
            self._wait(p.closed.is_set)
            if self.double.silent:
                self._wait(lambda: False)
            if self.stopped or self.shutdown:
                self._finish(
                    p,
                    (
                        CancellationReason.CancelledByUser,
                        "NoError",
                        "Request closed by client (499).",
                    ),
                )
                continue
            if self.double.cancel_with is not None:
                code, details = self.double.cancel_with
                self._finish(p, (CancellationReason.Error, code, details))
                continue
            text = "".join(p.pieces)
            self.double.spoken.append(text)
            audio = synthesize(text, self.fmt.name)
            step = self.double.chunk_bytes
            stopped = False
            boundaries = word_boundaries(p.result_id, text) if self.word_boundary.callbacks else []
            per_second = self.fmt.sample_rate * self.fmt.sample_width
            for pos in range(0, len(audio), step):
                if self.stopped or self.shutdown:
                    stopped = True
                    break
                while boundaries and boundaries[0][0] < (pos + step) / per_second:
                    self.word_boundary.signal(boundaries.pop(0)[1])  # ahead of its audio
                chunk = SynthesisResult(
                    p.result_id, ResultReason.SynthesizingAudio, audio[pos : pos + step]
                )
                self.synthesizing.signal(SynthesisEvent(chunk))
            if stopped:
                self._finish(p, (CancellationReason.CancelledByUser, "NoError", "stopped"))
            else:
                self._finish(p, None)


def _make_module(double: SdkDouble) -> types.ModuleType:
    """The stand-in for ``azure.cognitiveservices.speech``, bound to ``double``."""

    class SpeechConfig:
        def __init__(self, subscription: str | None = None, endpoint: str | None = None) -> None:
            double._step("SpeechConfig")
            self.subscription = subscription
            self.endpoint = endpoint
            self.authorization_token: str | None = None
            self.speech_synthesis_voice_name = ""
            self.speech_synthesis_language = ""
            self.output_format: Any = None
            self.properties: dict[str, str] = {}
            double.configs.add(self)

        def set_speech_synthesis_output_format(self, fmt: Any) -> None:
            self.output_format = fmt

        def set_property(self, prop: Any, value: str) -> None:
            self.properties[prop.name] = value

    class ResultFuture:
        def __init__(self, done: threading.Event, result: Callable[[], Any]) -> None:
            self._done = done
            self._result = result

        def get(self) -> Any:
            double._step("get")
            self._done.wait()  # like the SDK: no timeout
            return self._result()

    class StopFuture:
        def __init__(self, core: _Core) -> None:
            self._core = core

        def get(self) -> None:
            double._step("stop_speaking")
            self._core.stop()

    class SpeechSynthesisRequest:
        class InputStream:
            def __init__(self, parent: SpeechSynthesisRequest) -> None:
                self.__parent = parent  # the same cycle as the real SDK

            def write(self, text: str) -> None:
                double._step("write")
                self.__parent._pieces.append(text)

            def close(self) -> None:
                double._step("close")
                pending = self.__parent._pending
                if pending is not None:
                    pending[0].close_input(pending[1])

        def __init__(self, input_type: Any) -> None:
            if input_type is not SpeechSynthesisRequestInputType.TextStream:
                raise NotImplementedError("Only text streaming is supported in this version.")
            self._pieces: list[str] = []
            self._pending: tuple[_Core, _Pending] | None = None
            self.input_stream = SpeechSynthesisRequest.InputStream(self)
            self.props: dict[str, str] = {}
            double.requests.add(self)

        def __setattr__(self, name: str, value: Any) -> None:
            if name in ("rate", "pitch", "volume", "style"):
                self.props[name] = value
                return
            object.__setattr__(self, name, value)

    class SpeechSynthesizer:
        def __init__(self, speech_config: SpeechConfig, audio_config: Any = None) -> None:
            double._step("SpeechSynthesizer")
            fmt = next(
                f
                for f in az.OUTPUT_FORMATS.values()
                if f.sdk_name == getattr(speech_config.output_format, "name", "")
            )
            self._core = _Core(double, fmt)
            self.synthesis_started = self._core.started
            self.synthesizing = self._core.synthesizing
            self.synthesis_completed = self._core.completed
            self.synthesis_canceled = self._core.canceled
            self.synthesis_word_boundary = self._core.word_boundary
            self._ids = itertools.count(1)
            double.synthesizers.add(self)

        def speak_async(self, request: SpeechSynthesisRequest) -> ResultFuture:
            double._step("speak_async")
            double.request_props.append(dict(request.props))
            pending = _Pending(request._pieces, f"result-{next(self._ids)}")
            request._pending = (self._core, pending)
            self._core.enqueue(pending)
            return ResultFuture(pending.done, lambda: pending.result)

        def stop_speaking_async(self) -> StopFuture:
            return StopFuture(self._core)

        def __del__(self) -> None:
            core = self.__dict__.get("_core")
            if core is None:  # the constructor failed
                return
            with core.cond:
                core.shutdown = True
                core.cond.notify_all()
            double._step("release")

    class Connection:
        def __init__(self, core: _Core) -> None:
            self.connected = core.connected
            self.disconnected = core.disconnected

        @staticmethod
        def from_speech_synthesizer(synth: SpeechSynthesizer) -> Connection:
            return Connection(synth._core)

        def open(self, for_continuous: bool) -> None:
            pass

        def close(self) -> None:
            pass

    module = types.ModuleType("azure_sdk_double")
    module.__dict__.update(
        SpeechConfig=SpeechConfig,
        SpeechSynthesizer=SpeechSynthesizer,
        SpeechSynthesisRequest=SpeechSynthesisRequest,
        SpeechSynthesisRequestInputType=SpeechSynthesisRequestInputType,
        SpeechSynthesisOutputFormat=SpeechSynthesisOutputFormat,
        PropertyId=PropertyId,
        ResultReason=ResultReason,
        SpeechSynthesisBoundaryType=SpeechSynthesisBoundaryType,
        CancellationReason=CancellationReason,
        CancellationErrorCode=CancellationErrorCode,
        Connection=Connection,
    )
    return module
