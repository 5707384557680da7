"""Voice activity detection off the event loop: :class:`OffloadedVAD`.

A :class:`~antiphon.services.vad.VAD`'s inference runs inline, on the caller's thread:
measured on a 2-core machine (docs/offline.md), a Silero window costs about 1.2 ms of CPU
per 32 ms of audio (RTF ~0.04) and a WebRTC one about 5 µs; a process running many
streams on one event loop runs Silero on a worker thread: :class:`OffloadedVAD` wraps any
VAD so its model runs on a shared :class:`~antiphon.aio.worker.BatchWorker` (the frames of
every call, batched); :class:`~antiphon.plugins.silero.BatchedSileroVAD` subclasses it to
also stack the windows of every call into one model run there (Silero's ONNX model:
~0.07 ms of CPU a window at batch 32+, ``bench/vad_batch.py``).

How it is built: the loop only queues frames; the worker (or, when the worker lags, the
caller) analyses them with the inner VAD under the model's lock and posts the results to
one outbox, which the loop takes whole. Its own module because it is the only part of
voice activity detection that owns threads and locks. Import it from
:mod:`antiphon.services.vad`.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from antiphon.aio.worker import BatchWorker
from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError, StreamClosedError
from antiphon.services.vad_contract import VAD, VADEvent, VADState

__all__ = ["OffloadedVAD"]


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
