"""The voice activity detection contract: audio frames in, ``SpeechStart``/``SpeechEnd`` out.

A :class:`VAD` is a synchronous state machine, with no asyncio and no thread: feed it
:class:`~antiphon.audio.AudioFrame`s of any rate and channel count with :meth:`VAD.process`
and it returns the events that the audio decided. Frames are converted to the model's
rate (mono) with a streaming :class:`~antiphon.audio.AudioConverter`, cut into the model's
windows, and each window's speech probability goes through hysteresis:

* speech starts when the probability reaches ``activation_threshold`` and stays at or
  above ``deactivation_threshold`` for ``min_speech_duration``;
* speech ends when it stays below ``deactivation_threshold`` for ``min_silence_duration``.

Times are seconds of audio since the first frame (or the last :meth:`VAD.reset`), exact to
one model window: ``SpeechStart.time`` is where speech began, less ``padding``;
``SpeechEnd.time`` is where the silence began, plus ``padding``. Each event also says
``at``: the audio time at which it was decided (later, by the minimum durations), which is
what a turn-taking policy waits for.

A plugin supplies the model: its rate, its window and :meth:`VAD._probability`. Inference
runs inline: one window costs well under a millisecond (see docs/offline.md), like the
resampler that precedes it; put the VAD on a worker thread if a model is heavier.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter
from antiphon.errors import ConfigError


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
        if not 0.0 < self.activation_threshold <= 1.0:
            raise ConfigError(
                "VADOptions.activation_threshold must be in (0, 1], got "
                f"{self.activation_threshold!r}"
            )
        off = self.deactivation_threshold
        if off is not None and not 0.0 <= off <= self.activation_threshold:
            raise ConfigError(
                "VADOptions.deactivation_threshold must be in [0, activation_threshold], "
                f"got {off!r}"
            )
        for name in ("min_speech_duration", "min_silence_duration", "padding"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"VADOptions.{name} must be >= 0 seconds, got {value!r}")

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
        self._converter = AudioConverter(self.sample_rate, 1)
        self._pending = np.zeros(0, dtype=np.int16)
        self._windows = 0
        self._state = VADState.SILENCE
        self._run_start: int | None = None  # window index where a candidate run began
        self._speech_start = 0.0  # padded start of the current speech
        self._last_end = 0.0  # padded end of the previous speech (no overlap)
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
        """Seconds of audio analysed so far."""
        return self._windows * self.window_duration

    def process(self, frame: AudioFrame) -> list[VADEvent]:
        """Analyse ``frame`` (any rate, any channels); return the events it decided."""
        if not isinstance(frame, AudioFrame):
            raise ConfigError(f"VAD.process() takes an AudioFrame, got {type(frame).__name__}")
        return self._feed(self._converter.process(frame))

    def flush(self) -> list[VADEvent]:
        """End of the audio: analyse what is held back and close an open speech segment.

        A trailing partial window is padded with silence. The VAD can be fed again after.
        """
        events = self._feed(self._converter.flush())
        if self._pending.size:
            tail = np.zeros(self.window, dtype=np.int16)
            tail[: self._pending.size] = self._pending
            self._pending = np.zeros(0, dtype=np.int16)
            events += self._step(tail)
        if self._state is VADState.SPEECH:
            now = self.position
            end = now
            if self._run_start is not None:  # already in a silence: end where it began
                end = min(now, self._run_start * self.window_duration + self.options.padding)
            events.append(SpeechEnd(time=end, start=self._speech_start, at=now))
            self._last_end = end
            self._state = VADState.SILENCE
        self._run_start = None
        return events

    def reset(self) -> None:
        """Forget everything: time restarts at 0 with the next frame."""
        self._converter = AudioConverter(self.sample_rate, 1)
        self._pending = np.zeros(0, dtype=np.int16)
        self._windows = 0
        self._state = VADState.SILENCE
        self._run_start = None
        self._speech_start = self._last_end = 0.0
        self.probability = 0.0
        self._reset_model()

    # -- the decision
    def _feed(self, frame: AudioFrame) -> list[VADEvent]:
        if not frame.samples_per_channel:
            return []
        samples = frame.as_array()
        if self._pending.size:
            samples = np.concatenate([self._pending, samples])
        events: list[VADEvent] = []
        n = samples.size // self.window
        for i in range(n):
            events += self._step(samples[i * self.window : (i + 1) * self.window])
        self._pending = samples[n * self.window :].copy()
        return events

    def _step(self, window: npt.NDArray[np.int16]) -> list[VADEvent]:
        p = float(self._probability(window))
        self.probability = p
        index = self._windows
        self._windows += 1
        now = self._windows * self.window_duration
        opts = self.options
        wd = self.window_duration
        if self._state is VADState.SILENCE:
            if self._run_start is None:
                if p >= opts.activation_threshold:
                    self._run_start = index
            elif p < opts.off_threshold:
                self._run_start = None
            if self._run_start is not None and now - self._run_start * wd >= max(
                opts.min_speech_duration, wd
            ):
                start = max(0.0, self._last_end, self._run_start * wd - opts.padding)
                self._speech_start = start
                self._state = VADState.SPEECH
                self._run_start = None
                return [SpeechStart(time=start, at=now)]
            return []
        # speaking
        if self._run_start is None:
            if p < opts.off_threshold:
                self._run_start = index
        elif p >= opts.activation_threshold:
            self._run_start = None
        if self._run_start is not None and now - self._run_start * wd >= max(
            opts.min_silence_duration, wd
        ):
            silence = self._run_start * wd
            end = min(now, silence + opts.padding)
            self._state = VADState.SILENCE
            self._run_start = None
            self._last_end = end
            return [SpeechEnd(time=end, start=self._speech_start, at=now)]
        return []

    # -- for plugins
    @abstractmethod
    def _probability(self, window: npt.NDArray[np.int16]) -> float:
        """Speech probability in [0, 1] of one window of ``window`` int16 mono samples."""

    def _reset_model(self) -> None:  # noqa: B027 - optional hook
        """Drop the model's recurrent state (no-op for stateless models)."""
