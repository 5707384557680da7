"""The streaming STT contract: ``STT.stream()`` → ``RecognizeStream``.

A stream takes audio (``push_audio``), is told where an utterance ends (``flush``, e.g.
when the VAD hears silence) and that the audio is over (``end_input``), and yields
:class:`Transcript`s: interim ones while the user speaks, then one final one per
utterance, with start and end in seconds of the stream's audio. It reaches exactly one
terminal state — completed, cancelled or failed with a typed error — within its deadlines
(:class:`STTDeadlines`), whatever the engine does; only waiting for the caller's audio is
unbounded.

Plugins implement :meth:`RecognizeStream._run`, one loop that takes every input from the
stream's mailbox. Cloud plugins map it onto a connection; in-process engines (blocking,
native) use :class:`InProcessSTT`, which runs a :class:`Recognizer` on a dedicated
:class:`EngineWorker` thread that the plugin owns and joins (DESIGN rule 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import threading
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from antiphon.aio.stream import InputStream, ProviderService
from antiphon.aio.stream import StreamState as StreamState
from antiphon.aio.tasks import TaskOwner
from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter
from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError, StreamClosedError

log = logging.getLogger(__name__)
T = TypeVar("T")
E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class Transcript:
    """Recognised text of one utterance.

    ``is_final``: the engine will not revise it (interim ones are replaced by later ones
    of the same utterance). ``start``/``end``: seconds of the stream's audio (from its
    first pushed sample). ``confidence`` in [0, 1] (engines without one give 1.0 for
    final and 0.0 for interim). ``utterance``: counts the utterances of the stream from 0.
    ``generation``: the turn the stream belongs to.
    """

    text: str
    is_final: bool
    start: float
    end: float
    confidence: float = 0.0
    utterance: int = 0
    generation: int = 0


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
        self._launch(owner, f"{provider}-recognize")

    # -- input
    def push_audio(self, frame: AudioFrame) -> None:
        """Append audio of any rate and channel count (converted as the engine needs)."""
        if not isinstance(frame, AudioFrame):
            raise ConfigError(f"push_audio() takes an AudioFrame, got {type(frame).__name__}")
        self._check_input("push_audio")
        if frame.samples_per_channel:
            self.audio_seconds += frame.duration
            self._mailbox.send_nowait(AudioInput(frame))

    def flush(self) -> None:
        """The current utterance is over: finalise it now; more audio may follow."""
        self._check_input("flush")
        self._mailbox.send_nowait(FlushInput())

    def end_input(self) -> None:
        """No more audio: the stream completes once its final transcripts are out."""
        self._end_input(EndInput())

    # -- output
    async def finals(self) -> list[Transcript]:
        """Every final transcript of the stream (raises the stream's error on failure)."""
        return [t async for t in self if t.is_final]

    # -- for plugins
    def _emit(self, transcript: Transcript) -> None:
        if self._state is StreamState.RUNNING:
            self._out.send_nowait(transcript)


class STT(ProviderService[RecognizeStream]):
    """A streaming speech-to-text service.

    Owns every task its streams start; ``aclose()`` cancels live streams and releases
    connections or engine threads within its deadline. Use ``async with`` or ``aclose()``.
    """

    provider: ClassVar[str] = "stt"
    kind: ClassVar[str] = "STT"

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


# ----------------------------------------------------------------- in-process engines

_worker_ids = itertools.count(1)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class EngineWorker(Generic[E]):
    """A dedicated thread that owns one blocking engine and makes every call on it.

    The engine is built on the thread by ``factory`` (its first job). :meth:`call` runs a
    function of the engine there and waits for it within a deadline; a call that misses
    it marks the worker ``stuck`` (it is then never reused). :meth:`aclose` asks the
    thread to close the engine and end, and joins it within a deadline; a native call
    that never returns cannot be interrupted, so the thread is a daemon and finishes the
    close by itself if the call ever returns.
    """

    def __init__(
        self,
        factory: Callable[[], E],
        *,
        provider: str,
        close: Callable[[E], None] | None = None,
    ) -> None:
        self.id = next(_worker_ids)
        self.provider = provider
        self._loop = asyncio.get_running_loop()
        self._factory = factory
        self._close_engine = close
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._engine: E | None = None
        self._exited: asyncio.Future[None] = self._loop.create_future()
        self.stuck: str | None = None
        self._closing = False
        self._thread = threading.Thread(
            target=self._main, name=f"{provider}-engine-{self.id}", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"<EngineWorker {self.provider}#{self.id} stuck={self.stuck}>"

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    @property
    def usable(self) -> bool:
        """Healthy and not closing: may take another stream."""
        return self.stuck is None and not self._closing and self._thread.is_alive()

    # -- on the thread
    def _main(self) -> None:
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    break
                job()
        finally:
            engine, self._engine = self._engine, None
            if engine is not None and self._close_engine is not None:
                try:
                    self._close_engine(engine)
                except Exception:
                    log.exception("%s: closing the engine failed", self.provider)
            del engine
            self.post(_settle, self._exited, None, None)

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the event loop (from any thread; dropped if it closed)."""
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(fn, *args)

    # -- on the loop
    def submit(self, fn: Callable[[E], T]) -> asyncio.Future[T]:
        """Queue ``fn(engine)`` on the thread; the future resolves on the loop."""
        if self._closing:
            raise StreamClosedError(f"{self.provider} engine worker is closed")
        fut: asyncio.Future[T] = self._loop.create_future()
        fut.add_done_callback(_retrieve)

        def job() -> None:
            if fut.cancelled():
                return
            try:
                if self._engine is None:
                    self._engine = self._factory()
                result: Any = fn(self._engine)
            except BaseException as exc:
                self.post(_settle, fut, None, exc)
            else:
                self.post(_settle, fut, result, None)

        self._jobs.put(job)
        return fut

    async def call(self, fn: Callable[[E], T], *, timeout: float, stage: str) -> T:
        """Run ``fn(engine)`` on the thread within ``timeout`` seconds.

        Raises ``ProviderTimeoutError`` (and marks the worker stuck) on expiry, the
        function's ``ProviderError`` as is, and any other exception as ``ProviderError``.
        """
        fut = self.submit(fn)
        try:
            done, _ = await asyncio.wait([fut], timeout=timeout)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        if not done:
            fut.cancel()
            self.stuck = stage
            raise ProviderTimeoutError(
                "the engine did not return",
                provider=self.provider,
                stage=stage,
                timeout=timeout,
                hint="the engine thread is abandoned; it ends by itself if the call returns",
            )
        exc = fut.exception()
        if exc is None:
            return fut.result()
        if isinstance(exc, ProviderError):
            raise exc
        raise ProviderError(
            f"the engine raised {exc!r}", provider=self.provider, stage=stage
        ) from exc

    def retire(self) -> None:
        """Take no more jobs; the thread ends by itself after the queued ones (idempotent)."""
        if not self._closing:
            self._closing = True
            self._jobs.put(None)

    async def aclose(self, timeout: float) -> bool:
        """Stop the thread (after queued jobs) and join it; True if it ended in time."""
        self.retire()
        if not self._exited.done():
            await asyncio.wait([self._exited], timeout=timeout)
        if not self._exited.done():
            log.error(
                "%s: engine thread %s still busy (%s) after %.1fs; abandoned (daemon)",
                self.provider,
                self._thread.name,
                self.stuck or "closing",
                timeout,
            )
            return False
        self._thread.join(timeout=0.5)  # it has posted its last act: returns at once
        return not self._thread.is_alive()


@dataclass(frozen=True, slots=True)
class Hypothesis:
    """What an in-process engine recognised: times in seconds from the utterance start."""

    text: str
    start: float
    end: float
    confidence: float


class Recognizer(Protocol):
    """A blocking recogniser, called only on its :class:`EngineWorker` thread.

    One utterance at a time: ``start()``, ``process()`` audio at ``sample_rate`` (int16
    mono bytes), ``partial()`` for the hypothesis so far, ``finish()`` to end the
    utterance and get its final hypothesis (None when nothing was recognised).
    """

    sample_rate: int

    def start(self) -> None: ...

    def process(self, pcm: bytes) -> None: ...

    def partial(self) -> Hypothesis | None: ...

    def finish(self) -> Hypothesis | None: ...

    def close(self) -> None: ...


class InProcessSTT(STT):
    """Streaming STT over a blocking :class:`Recognizer` on worker threads it owns.

    Each live stream has a worker (thread + engine) of its own, so streams run in
    parallel; a worker of a stream that ended cleanly is kept for the next one (models
    take time to load), up to ``max_idle`` of them. ``interim_interval``: seconds of
    audio between interim transcripts (0 disables them).
    """

    def __init__(
        self,
        *,
        deadlines: STTDeadlines | None = None,
        interim_interval: float = 0.3,
        max_idle: int = 2,
    ) -> None:
        super().__init__(deadlines=deadlines)
        if (
            not isinstance(interim_interval, int | float)
            or isinstance(interim_interval, bool)
            or not 0 <= interim_interval < float("inf")
        ):
            raise ConfigError(
                f"interim_interval must be >= 0 seconds (0: no interim results), "
                f"got {interim_interval!r}"
            )
        if not isinstance(max_idle, int) or isinstance(max_idle, bool) or max_idle < 0:
            raise ConfigError(
                f"max_idle must be an int >= 0 (engines kept for reuse), got {max_idle!r}"
            )
        self.interim_interval = float(interim_interval)
        self.max_idle = max_idle
        self._idle: list[EngineWorker[Recognizer]] = []
        self._workers: set[EngineWorker[Recognizer]] = set()

    @abstractmethod
    def make_recognizer(self) -> Recognizer:
        """Build the engine (runs on the worker thread)."""

    def _new_stream(self, generation: int) -> RecognizeStream:
        return InProcessRecognizeStream(self, generation)

    def _take_worker(self) -> EngineWorker[Recognizer]:
        while self._idle:
            idle = self._idle.pop()
            if idle.usable:
                return idle
        w: EngineWorker[Recognizer] = EngineWorker(
            self.make_recognizer, provider=self.provider, close=lambda r: r.close()
        )
        self._workers.add(w)
        return w

    async def _give_back(self, worker: EngineWorker[Recognizer], healthy: bool) -> None:
        if healthy and worker.usable and not self._closed and len(self._idle) < self.max_idle:
            self._idle.append(worker)
            return
        self._workers.discard(worker)
        await worker.aclose(self.deadlines.close)

    async def prewarm(self) -> None:
        """Load one engine now, so the first stream starts at once."""
        if self._closed:
            raise StreamClosedError(f"{self.provider} STT is closed; create a new one")
        w = self._take_worker()
        try:
            await w.call(lambda r: None, timeout=self.deadlines.connect, stage="load")
        except BaseException:
            await self._give_back(w, False)
            raise
        await self._give_back(w, True)

    @property
    def threads(self) -> list[threading.Thread]:
        """The engine threads alive now (for leak checks)."""
        return [w.thread for w in self._workers if w.thread.is_alive()]

    async def _aclose_resources(self) -> None:
        workers = list(self._workers)
        self._workers.clear()
        self._idle.clear()
        if workers:
            await asyncio.gather(*(w.aclose(self.deadlines.close) for w in workers))


class InProcessRecognizeStream(RecognizeStream):
    """The stream of :class:`InProcessSTT`: audio goes to the engine in pushed chunks."""

    def __init__(self, stt: InProcessSTT, generation: int) -> None:
        self._stt = stt
        self._worker: EngineWorker[Recognizer] | None = None
        self._healthy = False
        super().__init__(
            provider=stt.provider,
            generation=generation,
            owner=stt._tasks,
            close_timeout=stt.deadlines.close,
        )

    async def _run(self) -> None:
        stt, dl = self._stt, self._stt.deadlines
        self._worker = worker = stt._take_worker()
        rate: int = await worker.call(_start, timeout=dl.connect, stage="load")
        converter = AudioConverter(rate, 1)
        samples = 0  # samples of the stream so far, at the engine's rate
        utt_start: int | None = None  # where the open utterance began
        utterance = 0
        since_interim = 0
        last_interim = ""
        every = round(stt.interim_interval * rate)

        async def finish(tail: AudioFrame) -> None:
            nonlocal utt_start, utterance, last_interim, samples
            if tail.samples_per_channel:
                if utt_start is None:  # all of the utterance was held in the resampler
                    await worker.call(_restart, timeout=dl.process, stage="process")
                    utt_start = samples
                await worker.call(_feeder(tail.data), timeout=dl.process, stage="process")
                samples += tail.samples_per_channel
            if utt_start is None:
                return
            hyp = await worker.call(_finish, timeout=dl.final, stage="final")
            offset = utt_start / rate
            if hyp is not None and hyp.text:
                self._emit(
                    Transcript(
                        hyp.text,
                        True,
                        offset + hyp.start,
                        offset + hyp.end,
                        hyp.confidence,
                        utterance,
                        self.generation,
                    )
                )
            utterance += 1
            utt_start, last_interim = None, ""

        async for item in self._mailbox:
            if isinstance(item, AudioInput):
                out = converter.process(item.frame)
                n = out.samples_per_channel
                if not n:
                    continue
                if utt_start is None:
                    await worker.call(_restart, timeout=dl.process, stage="process")
                    utt_start = samples
                await worker.call(_feeder(out.data), timeout=dl.process, stage="process")
                samples += n
                since_interim += n
                if every and since_interim >= every:
                    since_interim = 0
                    hyp = await worker.call(_partial, timeout=dl.process, stage="process")
                    if hyp is not None and hyp.text and hyp.text != last_interim:
                        last_interim = hyp.text
                        offset = utt_start / rate
                        self._emit(
                            Transcript(
                                hyp.text,
                                False,
                                offset + hyp.start,
                                offset + hyp.end,
                                hyp.confidence,
                                utterance,
                                self.generation,
                            )
                        )
            elif isinstance(item, FlushInput):
                await finish(converter.flush())
                since_interim = 0
            elif isinstance(item, EndInput):
                await finish(converter.flush())
                self._healthy = True
                return

    async def _cleanup(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        healthy = self._healthy
        try:
            if self.state is StreamState.CANCELLED and worker.stuck is None and worker.usable:
                # cancelled mid-utterance: reset the engine before reuse (bounded). An engine
                # that failed (raised or hung) is never reused: its state is unknown.
                healthy = False  # until the reset returns (a cancellation keeps it False)
                try:
                    await worker.call(_abandon, timeout=self._stt.deadlines.close, stage="close")
                    healthy = True
                except ProviderError:
                    pass
        finally:
            # a cancellation of this cleanup still gives the worker back (closed), then
            # propagates: it is never swallowed
            self._healthy = healthy
            await self._stt._give_back(worker, healthy)


# Engine-thread functions (module level: no closure over loop-side state).
def _start(r: Recognizer) -> int:
    return r.sample_rate


def _restart(r: Recognizer) -> None:
    r.start()


def _feeder(pcm: bytes) -> Callable[[Recognizer], None]:
    def feed(r: Recognizer) -> None:
        r.process(pcm)

    return feed


def _partial(r: Recognizer) -> Hypothesis | None:
    return r.partial()


def _finish(r: Recognizer) -> Hypothesis | None:
    return r.finish()


def _abandon(r: Recognizer) -> None:
    with contextlib.suppress(Exception):
        r.finish()
