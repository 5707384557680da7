"""The voice activity detection contract: audio frames in, ``SpeechStart``/``SpeechEnd`` out.

A :class:`VAD` is a synchronous state machine, with no asyncio and no thread: feed it
:class:`~antiphon.audio.AudioFrame`s of any rate and channel count with :meth:`VAD.process`
and it returns the events that the audio decided. Frames are converted to the model's
rate (mono) with a streaming :class:`~antiphon.audio.AudioConverter`, cut into the model's
windows, and each window's speech probability goes through hysteresis:

* speech starts when the probability reaches ``activation_threshold`` and does not fall
  below ``deactivation_threshold`` for ``min_speech_duration``;
* speech ends when the probability falls below ``deactivation_threshold`` and does not
  climb back to ``activation_threshold`` for ``min_silence_duration`` (values in between
  neither start nor break a run: that is the hysteresis, as in Silero's reference code).

The minimum durations are counted in whole model windows (rounded up, at least one).
Times are seconds of audio since the first frame (or the last :meth:`VAD.reset`), exact to
one model window: ``SpeechStart.time`` is where speech began, less ``padding``;
``SpeechEnd.time`` is where the silence began, plus ``padding``. Padding never reaches
before 0, into the previous segment, or past the audio seen. Each event also says ``at``:
the audio time at which it was decided (later, by the minimum durations), which is what a
turn-taking policy waits for. Events alternate start/end and their times never decrease;
how the audio is cut into frames does not change them.

A plugin supplies the model: its rate, its window and :meth:`VAD._probability`. Inference
runs inline, on the caller's thread (:mod:`antiphon.services.vad_offload` moves it to a
worker). This module holds the contract, its vocabulary (options, events, state) and
the one decision every model shares; the offloaded VAD and the plugins build on it (they
subclass :class:`VAD`), so it stands in a module of its own, importing none of them.
Import from :mod:`antiphon.services.vad`, which re-exports everything.
"""

from __future__ import annotations

import enum
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter, Quality
from antiphon.errors import ConfigError, StreamClosedError

__all__ = [
    "RESAMPLE_QUALITY",
    "VAD",
    "SpeechEnd",
    "SpeechStart",
    "VADEvent",
    "VADOptions",
    "VADState",
]

#: Quality of the conversion to the model's rate. soxr's filtered qualities (LQ and up)
#: hand out their output in blocks: from 20 ms frames of 8 kHz, soxr HQ returned ~100 ms
#: at once every fifth frame, so each window reached the model up to 100 ms (52 ms on
#: average) after its audio arrived, and every decision (a barge-in's speech start) was
#: that much late. ``QQ`` (cubic interpolation) returns every frame's samples at once,
#: costs less than the polyphase engine ``StreamResampler`` now uses at the speech
#: rates, serves every ratio, and is enough for a speech/silence decision (measured:
#: the same events on the suite's speech at every rate).
RESAMPLE_QUALITY: Quality = "QQ"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


@dataclass(frozen=True, slots=True)
class VADOptions:
    """Tuning of the speech/silence decision (all durations in seconds).

    ``deactivation_threshold`` defaults to ``activation_threshold - 0.15`` (at least
    0.01): the hysteresis that keeps a wavering probability from toggling speech.
    ``padding`` widens each speech segment on both sides (never before 0 or past the
    audio seen).
    """

    activation_threshold: float = 0.5
    deactivation_threshold: float | None = None
    min_speech_duration: float = 0.1
    min_silence_duration: float = 0.5
    padding: float = 0.1

    def __post_init__(self) -> None:
        on = self.activation_threshold
        if not _is_number(on) or not 0.0 < on <= 1.0:
            raise ConfigError(
                f"VADOptions.activation_threshold must be a number in (0, 1], got {on!r}"
            )
        off = self.deactivation_threshold
        if off is not None and (not _is_number(off) or not 0.0 <= off <= on):
            raise ConfigError(
                "VADOptions.deactivation_threshold must be a number in "
                f"[0, activation_threshold={on!r}] (or None for activation - 0.15), got {off!r}"
            )
        for name in ("min_speech_duration", "min_silence_duration", "padding"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value < math.inf:
                raise ConfigError(
                    f"VADOptions.{name} must be a finite number of seconds >= 0, got {value!r}"
                )

    @property
    def off_threshold(self) -> float:
        """The effective deactivation threshold."""
        if self.deactivation_threshold is not None:
            return self.deactivation_threshold
        return max(0.01, self.activation_threshold - 0.15)


@dataclass(frozen=True, slots=True)
class SpeechStart:
    """Speech began at ``time`` (padded); decided at audio time ``at``."""

    time: float
    at: float


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    """Speech that began at ``start`` ended at ``time`` (padded); decided at ``at``."""

    time: float
    start: float
    at: float

    @property
    def duration(self) -> float:
        return self.time - self.start


VADEvent = SpeechStart | SpeechEnd


class VADState(enum.Enum):
    SILENCE = "silence"
    SPEECH = "speech"


class VAD(ABC):
    """A streaming voice activity detector (one audio stream per instance).

    Subclasses set ``sample_rate`` and ``window`` (samples per model window) and
    implement :meth:`_probability`; :meth:`_reset_model` if the model keeps state.
    """

    name: ClassVar[str] = "vad"
    #: The model's sample rate in Hz.
    sample_rate: ClassVar[int]
    #: Samples per model window, at ``sample_rate``.
    window: ClassVar[int]

    def __init__(self, options: VADOptions | None = None) -> None:
        if options is not None and not isinstance(options, VADOptions):
            raise ConfigError(f"options must be VADOptions, got {type(options).__name__}")
        self.options = options or VADOptions()
        rate, window = self.sample_rate, self.window
        # the minimum durations and padding in samples; the durations in whole windows
        self._speech_need = window * max(
            1, _windows(self.options.min_speech_duration, rate, window)
        )
        self._silence_need = window * max(
            1, _windows(self.options.min_silence_duration, rate, window)
        )
        self._pad = round(self.options.padding * rate)
        self._on = self.options.activation_threshold  # the thresholds, read every window
        self._off = self.options.off_threshold
        self._converter = AudioConverter(rate, 1, quality=RESAMPLE_QUALITY)
        self._as_is = False  # the converter passes frames of the model's format through
        self._closed = False
        self._listener: Callable[[list[VADEvent]], None] | None = None
        self._clear()

    def _clear(self) -> None:
        self._pending = _NOTHING
        self._samples = 0  # samples analysed (at the model's rate; flush padding excluded)
        self._state = VADState.SILENCE
        self._run_start: int | None = None  # sample where a candidate run began
        self._speech_start = 0  # padded start of the current speech, in samples
        self._last_end = 0  # padded end of the previous speech (no overlap), in samples
        self.probability = 0.0

    # -- public
    @property
    def state(self) -> VADState:
        return self._state

    @property
    def speaking(self) -> bool:
        return self._state is VADState.SPEECH

    @property
    def window_duration(self) -> float:
        """Seconds per model window: the resolution of event times."""
        return self.window / self.sample_rate

    @property
    def position(self) -> float:
        """Seconds of audio analysed so far (what is held back for a window excluded)."""
        return self._samples / self.sample_rate

    def on_decided(self, listener: Callable[[list[VADEvent]], None] | None) -> None:
        """Hand events decided *off* the caller's thread to ``listener``, at once.

        A VAD whose model runs elsewhere (:class:`OffloadedVAD`) learns of events when its
        worker delivers them, between two frames; with a listener it calls
        ``listener(events)`` then (on the event loop), rather than returning them from the
        next :meth:`process`, a frame (20 ms on a phone line) later. Events decided inline
        (by :meth:`process` or :meth:`flush` themselves) are still returned, so each event
        reaches the caller exactly once, in order. An inline VAD never calls it.
        ``None`` removes the listener.
        """
        self._listener = listener

    def process(self, frame: AudioFrame) -> list[VADEvent]:
        """Analyse ``frame`` (any rate, any channels); return the events it decided."""
        if not isinstance(frame, AudioFrame):
            raise ConfigError(f"VAD.process() takes an AudioFrame, got {type(frame).__name__}")
        if self._closed:
            raise StreamClosedError("VAD.process() after close()")
        if self._as_is and frame.channels == 1 and frame.sample_rate == self.sample_rate:
            return self._feed(frame)  # what the converter would return: the frame itself
        converter = self._converter
        converted = converter.process(frame)
        self._as_is = converter.input_format == (self.sample_rate, 1)
        return self._feed(converted)

    def close(self) -> None:
        """The stream is over: release what the model holds, now (idempotent).

        A model that holds native memory (Silero's detector: ~2.5 MB resident) gives it
        back here (to its pool) rather than when the VAD is garbage collected: a call's
        objects may sit in reference cycles until a full collection, which a busy server
        runs rarely, and each call meanwhile took a new detector. The VAD takes no audio
        after (``StreamClosedError``).
        """
        self._listener = None  # no reference back to the caller (a session) after the end
        if not self._closed:
            self._closed = True
            self._release_model()

    def flush(self) -> list[VADEvent]:
        """End of the audio: analyse what is held back and close an open speech segment.

        A trailing partial window is analysed padded with silence (the padding does not
        count as audio: times stay exact). The VAD can be fed again after, and its times
        run on from :attr:`position`.
        """
        if self._closed:
            raise StreamClosedError("VAD.flush() after close()")
        events = self._feed(self._converter.flush())
        if self._pending.size:
            real = int(self._pending.size)
            tail = np.zeros(self.window, dtype=np.int16)
            tail[:real] = self._pending
            self._pending = _NOTHING
            events += self._step(tail, real)
        if self._state is VADState.SPEECH:
            now = self._samples
            end = now
            if self._run_start is not None:  # already in a silence: end where it began
                end = min(now, self._run_start + self._pad)
            events.append(self._end(end, now))
        self._run_start = None
        return events

    def reset(self) -> None:
        """Forget everything: time restarts at 0 with the next frame."""
        if self._closed:
            raise StreamClosedError("VAD.reset() after close()")
        self._converter = AudioConverter(self.sample_rate, 1, quality=RESAMPLE_QUALITY)
        self._as_is = False
        self._clear()
        self._reset_model()

    # -- the decision
    def _feed(self, frame: AudioFrame) -> list[VADEvent]:
        if not frame.samples_per_channel:
            return []
        samples = frame.as_array()
        held = self._pending.size
        if held:
            samples = np.concatenate((self._pending, samples))
        w = self.window
        size = samples.size
        if size == w:  # one whole window (a frame the model's window long), nothing over
            decided = self._step(samples, w)
            if held:
                self._pending = _NOTHING
            return decided
        events: list[VADEvent] = []
        n = size // w
        for i in range(n):
            events += self._step(samples[i * w : (i + 1) * w], w)
        self._pending = samples[n * w :].copy() if size > n * w else _NOTHING
        return events

    def _seconds(self, samples: int) -> float:
        return samples / self.sample_rate

    def _end(self, end: int, now: int) -> SpeechEnd:
        self._state = VADState.SILENCE
        self._run_start = None
        self._last_end = end
        return SpeechEnd(
            time=self._seconds(end), start=self._seconds(self._speech_start), at=self._seconds(now)
        )

    def _step(self, window: npt.NDArray[np.int16], real: int) -> list[VADEvent]:
        """One model window, of which the first ``real`` samples are audio."""
        p = float(self._probability(window))
        self.probability = p
        here = self._samples
        self._samples = now = here + real
        if self._state is VADState.SILENCE:
            if self._run_start is None:
                if p >= self._on:
                    self._run_start = here
            elif p < self._off:
                self._run_start = None
            if self._run_start is not None and now - self._run_start >= self._speech_need:
                start = max(0, self._last_end, self._run_start - self._pad)
                self._speech_start = start
                self._state = VADState.SPEECH
                self._run_start = None
                return [SpeechStart(time=self._seconds(start), at=self._seconds(now))]
            return []
        # speaking
        if self._run_start is None:
            if p < self._off:
                self._run_start = here
        elif p >= self._on:
            self._run_start = None
        if self._run_start is not None and now - self._run_start >= self._silence_need:
            return [self._end(min(now, self._run_start + self._pad), now)]
        return []

    # -- for plugins
    @abstractmethod
    def _probability(self, window: npt.NDArray[np.int16]) -> float:
        """Speech probability in [0, 1] of one window of ``window`` int16 mono samples."""

    def _reset_model(self) -> None:  # noqa: B027 - optional hook
        """Drop the model's recurrent state (no-op for stateless models)."""

    def _release_model(self) -> None:  # noqa: B027 - optional hook
        """Give back what the model holds (see :meth:`close`); called once."""


_NOTHING: npt.NDArray[np.int16] = np.zeros(0, dtype=np.int16)
_NOTHING.flags.writeable = False
"""No samples held back (shared: read, never written)."""


def _windows(seconds: float, rate: int, window: int) -> int:
    """Whole windows covering ``seconds`` (rounded up; float noise does not add one)."""
    return math.ceil(seconds * rate / window - 1e-9)
