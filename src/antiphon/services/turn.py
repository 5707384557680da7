"""End of turn: a semantic turn-detector model behind silence, with silence as the fallback.

The contract a turn model implements, and the policy the session's end-of-turn hook runs.

How it is built and why:

- **The model only advises.** When the VAD has heard a short silence after speech, the
  session asks :meth:`EndOfTurn.decide` with the user's audio so far. The verdict says
  whether the turn is complete and how many more seconds of silence to wait (``hold``)
  before ending it anyway: 0 when the model says "complete", up to
  ``EndOfTurnOptions.max_silence`` when it says "not yet" (a slow speaker thinking), and
  up to ``fallback_silence`` — plain silence endpointing — when there is no model, the
  model failed, or it did not answer within ``model_timeout``. Speech that resumes during
  the hold simply continues the turn; the session owns that timer, on its clock.
- **Nothing heavy on the loop** (rule 14): a :class:`TurnDetector` runs its model on a
  worker thread it owns; :meth:`TurnDetector.predict` only awaits the answer, within the
  deadline it is given. A detector whose previous prediction is still running says so at
  once (a ``ProviderTimeoutError``) rather than queueing, so a slow machine degrades to
  silence endpointing instead of a growing backlog.
- **The audio is bounded** (rule 13): :class:`TurnAudio` keeps the trailing
  ``TurnDetector.max_audio`` seconds of the user's audio at the model's rate in a fixed
  ring (resampled with state across frames, rule 5), cleared when a turn ends.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import numpy.typing as npt

from antiphon.aio.clock import Clock, MonotonicClock
from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter
from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError

__all__ = ["EndOfTurn", "EndOfTurnOptions", "TurnAudio", "TurnDetector", "TurnVerdict"]


class TurnDetector(abc.ABC):
    """A model that says whether an utterance is a complete turn.

    Implementations own their worker thread (closed by :meth:`aclose`, idempotent) and
    never block the event loop.
    """

    provider: ClassVar[str] = "turn-detector"
    #: The rate (Hz, mono int16) of the audio :meth:`predict` takes.
    sample_rate: ClassVar[int] = 16_000
    #: Seconds of trailing audio the model looks at; older audio is not needed.
    max_audio: ClassVar[float] = 8.0

    async def prewarm(self, timeout: float = 20.0) -> None:  # noqa: B027 - optional
        """Load the model now (bounded by ``timeout``) rather than on the first turn."""

    @abc.abstractmethod
    async def predict(self, audio: AudioFrame, *, timeout: float) -> float:
        """The probability (0 to 1) that the user finished their turn with ``audio``.

        Args:
            audio: the user's utterance, mono int16 at :attr:`sample_rate`.
            timeout: seconds to wait for the answer.

        Raises:
            ProviderTimeoutError: no answer within ``timeout``, or the previous
                prediction is still running.
            ProviderError: the model is missing, altered or failed.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop the worker thread and free the model (idempotent, bounded)."""


@dataclass(frozen=True, slots=True)
class EndOfTurnOptions:
    """How the model and silence decide the end of the user's turn.

    ``threshold``: the model's probability at or above which the turn is complete.
    ``max_silence``: seconds of silence after which the turn ends whatever the model said
    (a speaker who said "not yet" and then stayed silent). ``fallback_silence``: the
    silence that ends a turn when there is no model answer (plain endpointing).
    ``model_timeout``: seconds the model has to answer, after which silence decides.
    """

    threshold: float = 0.5
    max_silence: float = 2.0
    fallback_silence: float = 0.5
    model_timeout: float = 0.4

    def __post_init__(self) -> None:
        ok = isinstance(self.threshold, int | float) and not isinstance(self.threshold, bool)
        if not ok or not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"EndOfTurnOptions.threshold must be 0 to 1, got {self.threshold!r}")
        for name in ("max_silence", "fallback_silence", "model_timeout"):
            value = getattr(self, name)
            bad = not isinstance(value, int | float) or isinstance(value, bool)
            low = "> 0" if name == "model_timeout" else ">= 0"
            if bad or not math.isfinite(value) or value < 0 or (low == "> 0" and not value):
                raise ConfigError(f"EndOfTurnOptions.{name} must be seconds {low}, got {value!r}")
        if self.fallback_silence > self.max_silence:
            raise ConfigError(
                "EndOfTurnOptions.fallback_silence must not exceed max_silence "
                f"({self.fallback_silence} > {self.max_silence})"
            )


Source = Literal["model", "no-model", "slow", "failed", "no-audio"]


@dataclass(frozen=True, slots=True)
class TurnVerdict:
    """What :meth:`EndOfTurn.decide` concluded.

    ``complete``: the model says the turn is over (False when it was not asked or did
    not answer). ``probability``: its answer, None without one. ``source``: ``"model"``
    when it answered; otherwise why silence decides (``"no-model"``, ``"slow"``,
    ``"failed"``, ``"no-audio"``). ``hold``: seconds of further silence to wait before
    ending the turn (0: end it now). ``took``: seconds the decision took.
    """

    complete: bool
    probability: float | None
    source: Source
    hold: float
    took: float = 0.0


class EndOfTurn:
    """The session's end-of-turn hook: model plus silence, silence alone as the fallback.

    Args:
        detector: the turn model, or None for silence-only endpointing.
        options: thresholds and deadlines (:class:`EndOfTurnOptions`).
        clock: what ``took`` is measured on (the session's; default: the loop's).
    """

    def __init__(
        self,
        detector: TurnDetector | None,
        options: EndOfTurnOptions | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.detector = detector
        self.options = options or EndOfTurnOptions()
        self.clock: Clock = clock or MonotonicClock()
        self.last_error: ProviderError | None = None

    def _hold(self, total: float, silent_for: float) -> float:
        return max(0.0, total - silent_for)

    async def decide(self, audio: AudioFrame | None, *, silent_for: float) -> TurnVerdict:
        """Decide at a pause: end the turn now, or wait ``hold`` more seconds of silence.

        Args:
            audio: the user's turn so far (e.g. :meth:`TurnAudio.snapshot`).
            silent_for: seconds of silence already heard at this pause.
        """
        opts = self.options
        fallback = self._hold(opts.fallback_silence, silent_for)
        detector = self.detector
        if detector is None:
            return TurnVerdict(False, None, "no-model", fallback)
        if audio is None or not audio.samples_per_channel:
            return TurnVerdict(False, None, "no-audio", fallback)
        start = self.clock.now()
        try:
            probability = await detector.predict(audio, timeout=opts.model_timeout)
        except ProviderError as exc:
            self.last_error = exc
            source: Source = "slow" if isinstance(exc, ProviderTimeoutError) else "failed"
            took = self.clock.now() - start
            return TurnVerdict(False, None, source, self._hold(fallback, took), took)
        took = self.clock.now() - start
        if probability >= opts.threshold:
            return TurnVerdict(True, probability, "model", 0.0, took)
        hold = self._hold(opts.max_silence, silent_for + took)
        return TurnVerdict(False, probability, "model", hold, took)


class TurnAudio:
    """The trailing seconds of the user's audio, at the turn model's rate, in a fixed ring.

    :meth:`push` every inbound frame (any rate and channel count: converted with state
    across frames); :meth:`snapshot` gives the audio heard since the last :meth:`clear`,
    at most ``seconds`` of it.
    """

    def __init__(self, sample_rate: int = 16_000, seconds: float = 8.0) -> None:
        if not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ConfigError(f"TurnAudio sample_rate must be a positive int, got {sample_rate!r}")
        if not seconds > 0:
            raise ConfigError(f"TurnAudio seconds must be > 0, got {seconds!r}")
        self.sample_rate = sample_rate
        self._ring: npt.NDArray[np.int16] = np.zeros(round(sample_rate * seconds), np.int16)
        self._end = 0  # samples written since clear()
        self._converter = AudioConverter(sample_rate, 1)

    @property
    def duration(self) -> float:
        """Seconds held (at most the ring's length)."""
        return min(self._end, len(self._ring)) / self.sample_rate

    def push(self, frame: AudioFrame) -> None:
        """Add the user's audio."""
        out = self._converter.process(frame)
        samples = np.frombuffer(out.data, dtype="<i2")
        n, size = len(samples), len(self._ring)
        if n >= size:
            self._ring[:] = samples[-size:]
            self._end += n
            self._end -= self._end % size  # the ring starts at 0 again
            return
        start = self._end % size
        first = min(n, size - start)
        self._ring[start : start + first] = samples[:first]
        self._ring[: n - first] = samples[first:]
        self._end += n

    def snapshot(self) -> AudioFrame:
        """The audio since :meth:`clear` (at most the ring's length), oldest first."""
        size = len(self._ring)
        if self._end <= size:
            data = self._ring[: self._end]
        else:
            start = self._end % size
            data = np.concatenate([self._ring[start:], self._ring[:start]])
        return AudioFrame(data.tobytes(), self.sample_rate)

    def clear(self) -> None:
        """Forget the audio (a new turn begins)."""
        self._end = 0
