"""The streaming STT contract and its vocabulary: :class:`STT`, :class:`RecognizeStream`,
:class:`Transcript`, :class:`STTDeadlines` and the stream's mailbox inputs.

Split from :mod:`antiphon.services.stt` (which re-exports every name here and documents
the contract as a whole) so that the engine machinery built on it
(:mod:`antiphon.services.stt_engines`, :mod:`antiphon.services.stt_child`) imports the
contract without a cycle. A :class:`RecognizeStream` is an
:class:`~antiphon.aio.stream.InputStream` whose plugin implements ``_run``, one loop over
the mailbox; an :class:`STT` is a :class:`~antiphon.aio.stream.ProviderService` that
makes them.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from antiphon.aio.stream import InputStream, ProviderService
from antiphon.aio.stream import StreamState as StreamState
from antiphon.aio.tasks import TaskOwner
from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError
from antiphon.protocols.stt_session import Recognized

__all__ = [
    "STT",
    "AudioInput",
    "EndInput",
    "FlushInput",
    "RecognizeStream",
    "STTDeadlines",
    "StreamState",
    "Transcript",
]


@dataclass(frozen=True, slots=True)
class Transcript:
    """Recognised text of one utterance.

    ``is_final``: the engine will not revise it (interim ones are replaced by later ones
    of the same utterance). ``start``/``end``: seconds of the stream's audio (from its
    first pushed sample). ``confidence`` in [0, 1] (engines without one give 1.0 for
    final and 0.0 for interim). ``utterance``: counts the utterances of the stream from 0.
    ``generation``: the turn the stream belongs to. ``flushed``: this final answers the
    stream's flushes (every one sent so far): nothing more will come for the audio before
    them, so an agent waiting on the flush may end the turn at once. Its text may be empty
    (the engine had nothing left to say); such an empty answer is never an utterance.
    """

    text: str
    is_final: bool
    start: float
    end: float
    confidence: float = 0.0
    utterance: int = 0
    generation: int = 0
    flushed: bool = False


@dataclass(frozen=True, slots=True)
class STTDeadlines:
    """Every wait on an STT engine or provider, in seconds.

    ``connect``: open a connection, or load an in-process model. ``process``: one engine
    call on pushed audio (in-process) or a send (cloud). ``final``: from ``flush``/
    ``end_input`` to the final transcript. ``idle``: gap between server messages while a
    result is owed (cloud). ``close``: closing a stream or the service.
    """

    connect: float = 10.0
    process: float = 5.0
    final: float = 5.0
    idle: float = 5.0
    close: float = 2.0

    def __post_init__(self) -> None:
        for name in ("connect", "process", "final", "idle", "close"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"STTDeadlines.{name} must be a positive number of seconds")


@dataclass(frozen=True, slots=True)
class AudioInput:
    frame: AudioFrame


@dataclass(frozen=True, slots=True)
class FlushInput:
    pass


@dataclass(frozen=True, slots=True)
class EndInput:
    pass


class RecognizeStream(InputStream[Transcript]):
    """One recognition: audio in, :class:`Transcript`s out, exactly one terminal state.

    Use as ``async with stt.stream() as s`` so ``aclose()`` runs; iterate it for
    transcripts. Iteration ends when the stream completes or is cancelled, and raises
    the typed error when it failed (after yielding what was recognised before).
    """

    def __init__(
        self,
        *,
        provider: str,
        generation: int,
        owner: TaskOwner,
        close_timeout: float,
    ) -> None:
        super().__init__(provider=provider, generation=generation, close_timeout=close_timeout)
        self.audio_seconds = 0.0
        self._flushes_queued = 0  # flush() calls the stream's task has not taken yet
        self._until = 0.0  # the end of the latest transcript emitted (stream seconds)
        self._launch(owner, f"{provider}-recognize")

    # -- input
    def push_audio(self, frame: AudioFrame) -> None:
        """Append audio of any rate and channel count (converted as the engine needs)."""
        if not isinstance(frame, AudioFrame):
            raise ConfigError(f"push_audio() takes an AudioFrame, got {type(frame).__name__}")
        if self._state is not StreamState.RUNNING or self._input_ended:
            self._check_input("push_audio")  # raises, saying which
        if frame.samples_per_channel:
            self.audio_seconds += frame.duration
            mailbox = self._mailbox
            if mailbox.receiver_waiting() and self._take_now(frame):
                return
            mailbox.send_nowait(AudioInput(frame))

    def flush(self) -> None:
        """The current utterance is over: finalise it now; more audio may follow.

        Plugins that know which message answers it mark that final with
        ``flushed`` (its text empty when nothing was left to recognise).
        """
        self._check_input("flush")
        self._mailbox.send_nowait(FlushInput())
        self._flushes_queued += 1

    def end_input(self) -> None:
        """No more audio: the stream completes once its final transcripts are out."""
        self._end_input(EndInput())

    @property
    def behind(self) -> bool:
        """Input the stream's task has not taken yet: queued audio, a queued flush or the
        end (a plugin that knows more, such as an engine still decoding, says so too).
        A flush the task has sent, whose final the provider still owes, is not counted
        here: the STT's final deadline bounds that wait."""
        return self._mailbox.qsize() > 0

    # -- output
    async def finals(self) -> list[Transcript]:
        """Every final transcript with text (raises the stream's error on failure)."""
        return [t async for t in self if t.is_final and t.text]

    # -- for plugins
    def _take_audio_now(self, frame: AudioFrame) -> bool:
        """The direct path for audio: take ``frame`` now, in the caller's call, or decline.

        A plugin overrides it to spare its task a wake-up per frame. It is called only
        while the mailbox is empty and the stream's task waits on it (every input pushed
        before has been taken, no flush is queued, the task is not busy), so taking the
        frame keeps the order of the input. Return True when the frame is handled in
        full (what ``_run`` would do with an :class:`AudioInput` of it, synchronously,
        without awaiting), False to have it queued as an :class:`AudioInput` instead
        (declining must leave nothing done). Raising fails the stream, as ``_run``
        raising would: a ``ProviderError`` with itself, anything else typed; the push
        returns and the next input is refused. The default declines.
        """
        return False

    def _take_now(self, frame: AudioFrame) -> bool:
        """:meth:`_take_audio_now`, a failure of it failing the stream (then True: the
        frame was taken, and the stream failed on it)."""
        try:
            return self._take_audio_now(frame)
        except Exception as exc:
            if self._finish(StreamState.FAILED, self._typed(exc)):
                self._task.cancel()
            return True

    def _took_flush(self) -> None:
        """The stream's task took a :class:`FlushInput` from the mailbox."""
        self._flushes_queued -= 1

    @property
    def _flush_pending(self) -> bool:
        """A flush is still queued: an answer now does not answer it (not ``flushed``)."""
        return self._flushes_queued > 0

    def _emit(self, transcript: Transcript) -> None:
        if self._state is StreamState.RUNNING:
            self._out.send_nowait(transcript)
            self._until = max(self._until, transcript.end)

    def _deliver(self, results: Sequence[Recognized], *, answered: bool = False) -> None:
        """Emit a protocol's ``results`` (in stream time) as this stream's transcripts.

        ``answered``: they answer every flush sent so far, so their last final is marked
        ``flushed`` (an empty final is made when they hold none): nothing more comes for
        the audio before the flushes.
        """
        last = max((i for i, r in enumerate(results) if r.is_final), default=None)
        for i, r in enumerate(results):
            flushed = answered and i == last
            self._emit(
                Transcript(
                    r.text,
                    r.is_final,
                    r.start,
                    r.end,
                    r.confidence,
                    r.utterance,
                    self.generation,
                    flushed,
                )
            )
        if answered and last is None:
            self._emit(
                Transcript("", True, self._until, self._until, 0.0, 0, self.generation, True)
            )


class STT(ProviderService[RecognizeStream]):
    """A streaming speech-to-text service.

    Owns every task its streams start; ``aclose()`` cancels live streams and releases
    connections or engine threads within its deadline. Use ``async with`` or ``aclose()``.
    """

    provider: ClassVar[str] = "stt"
    kind: ClassVar[str] = "STT"
    #: True when the engine should be fed only the user's speech (plus a little before
    #: it), not the silence between: in-process engines, whose cost is CPU per second of
    #: audio. Cloud services get everything (their endpointing and keep-alive need it).
    speech_only: ClassVar[bool] = False

    def __init__(self, *, deadlines: STTDeadlines | None = None) -> None:
        if deadlines is not None and not isinstance(deadlines, STTDeadlines):
            raise ConfigError(f"deadlines must be STTDeadlines, got {type(deadlines).__name__}")
        super().__init__()
        self.deadlines = deadlines or STTDeadlines()

    def stream(self, *, generation: int = 0) -> RecognizeStream:
        """Open a recognition stream (must be called inside the event loop)."""
        return self._open(lambda: self._new_stream(generation))

    async def recognize(self, frame: AudioFrame, *, generation: int = 0) -> list[Transcript]:
        """One-shot: the final transcripts of ``frame`` (one utterance per VAD-free run)."""
        async with self.stream(generation=generation) as s:
            s.push_audio(frame)
            s.end_input()
            return await s.finals()

    async def prewarm(self) -> None:
        """Load the model or open a connection ahead of the first stream (no-op default)."""

    def _close_timeout(self) -> float:
        return self.deadlines.close

    @abstractmethod
    def _new_stream(self, generation: int) -> RecognizeStream:
        """Create the plugin's stream."""
