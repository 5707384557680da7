"""A test double of the Azure Speech SDK's recognition classes.

``RecognitionDouble().module`` stands in for ``azure.cognitiveservices.speech`` (pass it
as ``AzureSTT(sdk=...)``): ``SpeechConfig``, ``PropertyId``, ``audio.AudioStreamFormat``,
``audio.PushAudioInputStream``, ``audio.AudioConfig``, ``SpeechRecognizer`` (continuous
recognition and its ``recognizing``/``recognized``/``canceled``/``session_stopped``/
``speech_end_detected`` signals), ``PhraseListGrammar``, ``Connection`` and the enums the
plugin reads. A background "native" thread per recognizer plays the service: it fires
``connected`` once recognition starts and, when the push stream is closed, a
``recognized`` of the script's next line (if any audio came), ``speech_end_detected`` and
``session_stopped`` — from that thread, as the real SDK calls back from its own threads.

Every call is recorded with the thread it ran on (:attr:`RecognitionDouble.calls`), and
every step can be made to block until released (:meth:`RecognitionDouble.block`) or to
raise (:meth:`RecognitionDouble.fail`): ``SpeechConfig``, ``SpeechRecognizer``, ``start``,
``write``, ``close``, ``stop``, ``disconnect_all``.
"""

from __future__ import annotations

import enum
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["STEPS", "RecognitionDouble"]

STEPS = ("SpeechConfig", "SpeechRecognizer", "start", "write", "close", "stop", "disconnect_all")
#: The longest a blocked step waits when a test never releases it.
BLOCK_SECONDS = 30.0


class ResultReason(enum.Enum):
    RecognizedSpeech = 3
    NoMatch = 0


class CancellationReason(enum.Enum):
    Error = 1
    EndOfStream = 2


class PropertyId(enum.Enum):
    Speech_SegmentationSilenceTimeoutMs = 9001


@dataclass
class Call:
    step: str
    thread: str


class _Signal:
    def __init__(self, double: RecognitionDouble) -> None:
        self._double = double
        self.handlers: list[Callable[[Any], None]] = []

    def connect(self, handler: Callable[[Any], None]) -> None:
        self.handlers.append(handler)

    def disconnect_all(self) -> None:
        self._double._step("disconnect_all")
        self.handlers.clear()

    def fire(self, evt: Any) -> None:
        for handler in list(self.handlers):
            handler(evt)


class _Future:
    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn = fn

    def get(self) -> None:
        self._fn()


class RecognitionDouble:
    """The fake SDK module and the switches of its behaviour (see the module docstring)."""

    def __init__(self, script: list[str] | None = None) -> None:
        self.script = list(script or [])
        self.calls: list[Call] = []
        self.recognizers: list[Any] = []
        self._blocked: dict[str, threading.Event] = {}
        self._failing: dict[str, Exception] = {}
        self._lock = threading.Lock()
        self.module = self._build_module()

    # -- switches
    def block(self, step: str) -> threading.Event:
        """Make ``step`` block until the returned event is set (or BLOCK_SECONDS pass)."""
        assert step in STEPS, step
        event = threading.Event()
        self._blocked[step] = event
        return event

    def fail(self, step: str, exc: Exception | None = None) -> None:
        assert step in STEPS, step
        self._failing[step] = exc or RuntimeError(f"injected failure in {step}")

    def release_all(self) -> None:
        for event in self._blocked.values():
            event.set()

    def threads_of(self, step: str) -> set[str]:
        return {c.thread for c in self.calls if c.step == step}

    def _step(self, step: str) -> None:
        with self._lock:
            self.calls.append(Call(step, threading.current_thread().name))
        event = self._blocked.get(step)
        if event is not None:
            event.wait(BLOCK_SECONDS)
        exc = self._failing.get(step)
        if exc is not None:
            raise exc

    # -- the module
    def _build_module(self) -> types.SimpleNamespace:
        double = self

        class SpeechConfig:
            def __init__(self, subscription: str | None = None, endpoint: str = "") -> None:
                double._step("SpeechConfig")
                self.subscription = subscription
                self.endpoint = endpoint
                self.authorization_token: str | None = None
                self.speech_recognition_language = ""
                self.properties: dict[Any, str] = {}

            def set_property(self, prop: Any, value: str) -> None:
                self.properties[prop] = value

        class AudioStreamFormat:
            def __init__(self, samples_per_second: int, bits_per_sample: int, channels: int):
                self.rate = samples_per_second

        class PushAudioInputStream:
            def __init__(self, stream_format: AudioStreamFormat) -> None:
                self.data = bytearray()
                self.closed = threading.Event()

            def write(self, data: bytes) -> None:
                double._step("write")
                self.data += data

            def close(self) -> None:
                double._step("close")
                self.closed.set()

        class AudioConfig:
            def __init__(self, stream: PushAudioInputStream) -> None:
                self.stream = stream

        @dataclass
        class _Result:
            text: str
            offset: int
            duration: int
            reason: ResultReason

        @dataclass
        class _Evt:
            result: Any = None
            offset: int = 0

        class SpeechRecognizer:
            def __init__(self, speech_config: SpeechConfig, audio_config: AudioConfig) -> None:
                double._step("SpeechRecognizer")
                self.config = speech_config
                self.stream = audio_config.stream
                self.phrases: list[str] = []
                self.recognizing = _Signal(double)
                self.recognized = _Signal(double)
                self.canceled = _Signal(double)
                self.session_stopped = _Signal(double)
                self.speech_end_detected = _Signal(double)
                self.connection = _Connection()
                self._native: threading.Thread | None = None
                self._stopped = threading.Event()
                double.recognizers.append(self)

            def start_continuous_recognition_async(self) -> _Future:
                def start() -> None:
                    double._step("start")
                    self._native = threading.Thread(
                        target=self._serve, name="sdk-native", daemon=True
                    )
                    self._native.start()

                return _Future(start)

            def stop_continuous_recognition_async(self) -> _Future:
                def stop() -> None:
                    double._step("stop")
                    self.stream.closed.set()
                    self._stopped.wait(5.0)

                return _Future(stop)

            def _serve(self) -> None:
                self.connection.connected.fire(_Evt())
                self.stream.closed.wait()
                samples = len(self.stream.data) // 2
                ticks = samples * 10_000_000 // 16000
                if samples and double.script:
                    text = double.script.pop(0)
                    self.recognizing.fire(
                        _Evt(_Result(text.split()[0], 0, ticks // 2, ResultReason.NoMatch))
                    )
                    result = _Result(text, 0, ticks, ResultReason.RecognizedSpeech)
                    self.recognized.fire(_Evt(result))
                self.speech_end_detected.fire(_Evt(offset=ticks))
                self._stopped.set()
                self.session_stopped.fire(_Evt())

        class _Connection:
            def __init__(self) -> None:
                self.connected = _Signal(double)
                self.disconnected = _Signal(double)

            @staticmethod
            def from_recognizer(recognizer: SpeechRecognizer) -> _Connection:
                return recognizer.connection

        class PhraseListGrammar:
            def __init__(self, recognizer: SpeechRecognizer) -> None:
                self.recognizer = recognizer

            @staticmethod
            def from_recognizer(recognizer: SpeechRecognizer) -> PhraseListGrammar:
                return PhraseListGrammar(recognizer)

            def addPhrase(self, phrase: str) -> None:  # the SDK's name
                self.recognizer.phrases.append(phrase)

        audio = types.SimpleNamespace(
            AudioStreamFormat=AudioStreamFormat,
            PushAudioInputStream=PushAudioInputStream,
            AudioConfig=AudioConfig,
        )
        return types.SimpleNamespace(
            SpeechConfig=SpeechConfig,
            PropertyId=PropertyId,
            ResultReason=ResultReason,
            CancellationReason=CancellationReason,
            SpeechRecognizer=SpeechRecognizer,
            PhraseListGrammar=PhraseListGrammar,
            Connection=_Connection,
            audio=audio,
        )
