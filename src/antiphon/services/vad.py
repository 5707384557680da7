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
runs inline, on the caller's thread: measured on a 2-core machine (docs/offline.md), a
Silero window costs about 1.2 ms of CPU per 32 ms of audio (RTF ~0.04) and a WebRTC one
about 5 µs; a process running many streams on one event loop runs Silero on a worker
thread: :class:`OffloadedVAD` wraps any VAD so its model runs on a shared
:class:`~antiphon.aio.worker.BatchWorker` (the frames of every call, batched);
:class:`~antiphon.plugins.silero.BatchedSileroVAD` also stacks the windows of every call
into one model run there (Silero's ONNX model: ~0.07 ms of CPU a window at batch 32+,
``bench/vad_batch.py``).
:class:`SpeechGate` passes a stream's audio on only while its VAD hears speech.
"""

from __future__ import annotations

import enum
import math
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from antiphon.aio.worker import BatchWorker
from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter, Quality
from antiphon.errors import ConfigError, StreamClosedError

__all__ = [
    "RESAMPLE_QUALITY",
    "VAD",
    "OffloadedVAD",
    "SpeechEnd",
    "SpeechGate",
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
        self._converter = AudioConverter(rate, 1, quality=RESAMPLE_QUALITY)
        self._closed = False
        self._listener: Callable[[list[VADEvent]], None] | None = None
        self._clear()

    def _clear(self) -> None:
        self._pending = np.zeros(0, dtype=np.int16)
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
        return self._feed(self._converter.process(frame))

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
            self._pending = np.zeros(0, dtype=np.int16)
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
        self._clear()
        self._reset_model()

    # -- the decision
    def _feed(self, frame: AudioFrame) -> list[VADEvent]:
        if not frame.samples_per_channel:
            return []
        samples = frame.as_array()
        if self._pending.size:
            samples = np.concatenate([self._pending, samples])
        events: list[VADEvent] = []
        w = self.window
        n = samples.size // w
        for i in range(n):
            events += self._step(samples[i * w : (i + 1) * w], w)
        self._pending = samples[n * w :].copy()
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
        opts = self.options
        if self._state is VADState.SILENCE:
            if self._run_start is None:
                if p >= opts.activation_threshold:
                    self._run_start = here
            elif p < opts.off_threshold:
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
            if p < opts.off_threshold:
                self._run_start = here
        elif p >= opts.activation_threshold:
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


class SpeechGate:
    """Passes audio on only while the user speaks, plus ``preroll`` seconds before.

    ``feed(frame, speaking)`` returns the frames to pass: while ``speaking`` is False
    (the VAD hears silence) frames are held in a ring of the last ``preroll`` seconds;
    when it turns True the ring is released first, then every frame passes. The ring
    covers what the VAD needs to decide speech began (its minimum duration, its padding,
    and the lag of a VAD run on a worker). Disabled (``enabled=False``), everything passes.
    An agent uses it to feed an in-process recogniser only speech: its cost is CPU per
    second of audio, and a phone line streams silence without pause.
    """

    def __init__(self, *, preroll: float = 0.6, enabled: bool = True) -> None:
        self.enabled = enabled
        self.preroll = preroll
        self._ring: deque[AudioFrame] = deque()
        self._held = 0.0

    def feed(self, frame: AudioFrame, speaking: bool) -> list[AudioFrame]:
        if not self.enabled:
            return [frame]
        if speaking:
            out = [*self._ring, frame]
            self._ring.clear()
            self._held = 0.0
            return out
        self._ring.append(frame)
        self._held += frame.duration
        while self._ring and self._held - self._ring[0].duration >= self.preroll:
            self._held -= self._ring.popleft().duration
        return []


def _windows(seconds: float, rate: int, window: int) -> int:
    """Whole windows covering ``seconds`` (rounded up; float noise does not add one)."""
    return math.ceil(seconds * rate / window - 1e-9)


# ------------------------------------------------------------ inference off the event loop


@dataclass(frozen=True, slots=True)
class _Decided:
    events: list[VADEvent]
    position: float
    probability: float
    state: VADState


class OffloadedVAD(VAD):
    """A VAD whose model runs on a shared :class:`~antiphon.aio.worker.BatchWorker`.

    Same contract as the ``inner`` VAD (same events, same times: they are in audio
    time), but :meth:`process` only queues the frame and the event loop never runs the
    model (DESIGN rule 14). The worker's events reach the caller the moment the worker
    delivers them when a listener is set (:meth:`VAD.on_decided`: a barge-in's speech
    start is acted on at once); without one, :meth:`process` returns the events decided
    since the last call, a frame (20 ms on a phone line) later.
    The frames of every call go to one worker thread, which takes whatever was queued by
    all calls in one batch and posts the batch's results back in one thread hop.
    ``state``, ``speaking``, ``position`` and ``probability`` are those of the last
    decided frame. :meth:`flush` and :meth:`reset` run on the caller's thread, after the
    frames still queued (a lock orders them with the worker; :meth:`process` never waits
    for inference).

    When the worker is more than ``max_lag`` seconds of audio behind (it is starved),
    frames are analysed inline instead, so decisions never fall further behind.

    Every analysis (on the worker or inline) appends its results to one outbox while it
    holds the model's lock, so the outbox is in the order the audio was analysed; the
    loop always takes all of it. A worker's results whose delivery is still in flight
    when an inline analysis (the fallback, a flush) runs are taken with it, before its
    own: events never reach the caller out of order, and the late delivery finds the
    outbox empty.
    """

    name = "offloaded"
    sample_rate: ClassVar[int] = 16000
    window: ClassVar[int] = 512

    def __init__(self, inner: VAD, worker: BatchWorker, *, max_lag: float = 0.5) -> None:
        self.inner = inner
        self.options = inner.options
        self.max_lag = max_lag
        self._worker = worker
        self._lock = threading.Lock()  # the frame queue and the outbox (held briefly)
        self._model_lock = threading.Lock()  # the inner VAD (held across inference)
        self._frames: deque[AudioFrame] = deque()  # queued, not yet analysed
        self._queued_seconds = 0.0
        self._scheduled = False
        self._outbox: list[_Decided] = []  # analysed, not yet taken by the loop
        self._ready: list[VADEvent] = []
        self._position = 0.0
        self._state = VADState.SILENCE
        self._closed = False
        self._listener = None
        self.probability = 0.0
        self.inline_frames = 0
        """Frames analysed inline because the worker was behind."""

    @property
    def window_duration(self) -> float:
        return self.inner.window_duration

    @property
    def position(self) -> float:
        return self._position

    def process(self, frame: AudioFrame) -> list[VADEvent]:
        if not isinstance(frame, AudioFrame):
            raise ConfigError(f"VAD.process() takes an AudioFrame, got {type(frame).__name__}")
        if self._closed:
            raise StreamClosedError("VAD.process() after close()")
        with self._lock:
            self._frames.append(frame)
            self._queued_seconds += frame.duration
            lagging = self._queued_seconds > self.max_lag
            schedule = not self._scheduled and not lagging
            if schedule:
                self._scheduled = True
        if lagging:  # the worker is starved: decide here rather than fall behind
            self.inline_frames += 1
            self._analyse()
            self._take()
        elif schedule and not self._submit():
            with self._lock:
                self._scheduled = False
            self._analyse()
            self._take()
        ready, self._ready = self._ready, []
        return ready

    def _submit(self) -> bool:
        """Have the worker analyse the queued frames; False if it refused (run inline).

        A subclass whose model runs many calls' windows in one batch hands itself to
        its batch here (:class:`antiphon.plugins.silero.BatchedSileroVAD`).
        """
        return self._worker.submit(self._analyse, self._delivered)

    def _take_frames(self) -> list[AudioFrame]:
        """The queued frames, taken (under the model's lock, on whichever thread)."""
        with self._lock:
            self._scheduled = False
            frames = list(self._frames)
            self._frames.clear()
            self._queued_seconds = 0.0
        return frames

    def _post(self, events: list[VADEvent]) -> None:
        """Results of an analysis to the outbox (under the model's lock)."""
        inner = self.inner
        decided = _Decided(events, inner.position, inner.probability, inner.state)
        with self._lock:
            self._outbox.append(decided)

    def _analyse(self) -> None:
        """Analyse every queued frame (on the worker, or inline) into the outbox.

        The queue's lock is held only to take the frames and post the results (the
        loop's ``process`` takes it too, so never across inference); the model's lock
        orders analyses.
        """
        with self._model_lock:
            frames = self._take_frames()
            if self._closed:  # a batch job that ran after close(): the model is gone
                return
            events: list[VADEvent] = []
            for frame in frames:
                events += self.inner.process(frame)
            self._post(events)

    def _take(self) -> None:
        """On the loop: what the outbox holds joins what the next process() returns."""
        with self._lock:
            taken, self._outbox = self._outbox, []
        for decided in taken:
            self._ready += decided.events
        if taken:
            last = taken[-1]
            self._position, self.probability, self._state = (
                last.position,
                last.probability,
                last.state,
            )

    def _delivered(self, _result: object = None) -> None:
        """On the loop, as the worker delivers: to the listener now, if there is one."""
        self._take()
        listener = self._listener
        if listener is not None and self._ready and not self._closed:
            ready, self._ready = self._ready, []
            listener(ready)

    def flush(self) -> list[VADEvent]:
        if self._closed:
            raise StreamClosedError("VAD.flush() after close()")
        self._analyse()
        with self._model_lock:
            self._post(self.inner.flush())
        self._take()
        ready, self._ready = self._ready, []
        return ready

    def close(self) -> None:
        """Release the inner VAD's model now; a frame still queued is dropped."""
        self._listener = None
        with self._model_lock, self._lock:
            if self._closed:
                return
            self._closed = True
            self._frames.clear()
            self._queued_seconds = 0.0
            self._outbox.clear()
            self.inner.close()

    def reset(self) -> None:
        if self._closed:
            raise StreamClosedError("VAD.reset() after close()")
        with self._model_lock, self._lock:
            self._frames.clear()
            self._queued_seconds = 0.0
            self._outbox.clear()
            self.inner.reset()
        self._ready = []
        self._position, self.probability, self._state = 0.0, 0.0, VADState.SILENCE

    def _probability(self, window: npt.NDArray[np.int16]) -> float:  # pragma: no cover
        raise NotImplementedError("OffloadedVAD delegates to its inner VAD")
