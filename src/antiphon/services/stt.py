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
native) use :class:`InProcessSTT`, which runs each :class:`Recognizer` on a dedicated
:class:`EngineWorker` thread that the plugin owns and joins (DESIGN rule 3), leased to a
stream per utterance from a bounded pool; the audio queued behind a frame goes to the
engine in the same thread hop.

``STT.speech_only`` tells an agent to feed the engine only speech (an in-process engine
costs CPU per second of audio, silence included); ``RecognizeStream.behind`` says input
is still unanswered (the agent then waits for the final, bounded, rather than end the
turn with no text).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from antiphon.aio.channel import ChannelClosed
from antiphon.aio.stream import InputStream, ProviderService
from antiphon.aio.stream import StreamState as StreamState
from antiphon.aio.tasks import TaskOwner
from antiphon.aio.worker import ThreadWorker
from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter
from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError, StreamClosedError
from antiphon.protocols.stt_session import Recognized

__all__ = [
    "STT",
    "AudioInput",
    "ChildProcessRecognizer",
    "EndInput",
    "EngineWorker",
    "FlushInput",
    "Hypothesis",
    "InProcessRecognizeStream",
    "InProcessSTT",
    "RecognizeStream",
    "Recognizer",
    "STTDeadlines",
    "StreamState",
    "Transcript",
]

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
        self._check_input("push_audio")
        if frame.samples_per_channel:
            self.audio_seconds += frame.duration
            self._mailbox.send_nowait(AudioInput(frame))

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
        """Input not yet answered: queued audio or a flush whose final is owed."""
        return self._mailbox.qsize() > 0

    # -- output
    async def finals(self) -> list[Transcript]:
        """Every final transcript with text (raises the stream's error on failure)."""
        return [t async for t in self if t.is_final and t.text]

    # -- for plugins
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


# ----------------------------------------------------------------- in-process engines

#: The owned engine thread (written once in :mod:`antiphon.aio.worker`).
EngineWorker = ThreadWorker


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
    """Streaming STT over a blocking :class:`Recognizer` on a bounded pool of engines.

    An engine (a worker thread and its recogniser) is leased by a stream for one
    utterance, from its first audio to its final transcript (``flush``/``end_input``), then
    returned to the pool for any stream: a stream fed only speech (the agent session
    does that for ``speech_only`` engines) holds an engine only while its user speaks, so
    a pool of a few engines serves many calls. At most ``max_engines`` engines live at
    once (None: no bound); a stream that finds none free waits for one, at most
    ``deadlines.connect`` seconds, then fails with a typed ``ProviderTimeoutError`` (stage
    ``"engine pool"``) rather than falling silently behind. Engines beyond ``max_idle``
    are closed when returned. ``interim_interval``: seconds of audio between interim transcripts (0
    disables them). ``max_backlog``: seconds of audio a stream may hold unprocessed
    before it fails with a typed error (stage ``"backlog"``: its engine cannot keep up,
    the process is over capacity).
    """

    speech_only: ClassVar[bool] = True
    #: The recogniser's sample rate when the plugin knows it without loading an engine
    #: (None: a stream leases an engine at once to ask it).
    engine_rate: ClassVar[int | None] = None

    def __init__(
        self,
        *,
        deadlines: STTDeadlines | None = None,
        interim_interval: float = 0.3,
        max_idle: int = 2,
        max_engines: int | None = None,
        max_backlog: float = 10.0,
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
        if max_engines is not None and (
            not isinstance(max_engines, int) or isinstance(max_engines, bool) or max_engines < 1
        ):
            raise ConfigError(
                f"max_engines must be an int >= 1 (engines alive at once) or None, "
                f"got {max_engines!r}"
            )
        if not isinstance(max_backlog, int | float) or not 0 < max_backlog < float("inf"):
            raise ConfigError(f"max_backlog must be > 0 seconds, got {max_backlog!r}")
        self.interim_interval = float(interim_interval)
        self.max_idle = max_idle
        self.max_engines = max_engines
        self.max_backlog = float(max_backlog)
        self._idle: list[EngineWorker[Recognizer]] = []
        self._workers: set[EngineWorker[Recognizer]] = set()
        self._waiters: collections.deque[asyncio.Future[EngineWorker[Recognizer]]] = (
            collections.deque()
        )
        self._rate_seen: int | None = None  # the engines' rate, once one was asked
        self.leases = 0
        """Engines leased so far (one per utterance)."""
        self.pool_waits = 0
        """Leases that had to wait for a free engine."""

    @abstractmethod
    def make_recognizer(self) -> Recognizer:
        """Build the engine (runs on the worker thread)."""

    def _new_stream(self, generation: int) -> RecognizeStream:
        return InProcessRecognizeStream(self, generation)

    @property
    def busy_engines(self) -> int:
        """Engines leased to a stream now."""
        return len(self._workers) - len(self._idle)

    def _take_worker(self) -> EngineWorker[Recognizer] | None:
        """A free engine at once, or None when ``max_engines`` are all leased."""
        while self._idle:
            idle = self._idle.pop()
            if idle.usable:
                return idle
            self._workers.discard(idle)
        if self.max_engines is not None and len(self._workers) >= self.max_engines:
            return None
        w: EngineWorker[Recognizer] = EngineWorker(
            self.make_recognizer, provider=self.provider, close=lambda r: r.close()
        )
        self._workers.add(w)
        return w

    async def _lease(self) -> EngineWorker[Recognizer]:
        """An engine for one utterance; waits (bounded) while all are leased."""
        self.leases += 1
        w = None if self._waiters else self._take_worker()
        if w is not None:
            return w
        self.pool_waits += 1
        fut: asyncio.Future[EngineWorker[Recognizer]] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        timeout = self.deadlines.connect
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise ProviderTimeoutError(
                f"no free engine: all {self.max_engines} are busy",
                provider=self.provider,
                stage="engine pool",
                timeout=timeout,
                hint="the process takes more calls than its engines serve; lower the "
                "server's max_sessions or raise max_engines",
            ) from None
        except BaseException:
            if fut.done() and not fut.cancelled():  # handed over as we gave up: put it back
                self._idle.append(fut.result())
                self._hand_over()
            raise
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    def _hand_over(self) -> None:
        """Give free engines to waiting streams, first come first served."""
        while self._waiters:
            w = self._take_worker()
            if w is None:
                return
            fut = self._waiters.popleft()
            if fut.done():  # gave up meanwhile
                self._idle.append(w)
                continue
            fut.set_result(w)

    async def _give_back(self, worker: EngineWorker[Recognizer], healthy: bool) -> None:
        if healthy and worker.usable and not self._closed:
            if self._waiters:
                self._idle.append(worker)
                self._hand_over()
                return
            if len(self._idle) < self.max_idle:
                self._idle.append(worker)
                return
        self._workers.discard(worker)
        self._hand_over()  # room for a new engine
        await worker.aclose(self.deadlines.close)

    async def prewarm(self) -> None:
        """Load one engine now (and learn its rate), so the first stream starts at once."""
        if self._closed:
            raise StreamClosedError(f"{self.provider} STT is closed; create a new one")
        w = await self._lease()
        try:
            self._rate_seen = await w.call(_start, timeout=self.deadlines.connect, stage="load")
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
        for fut in self._waiters:
            fut.cancel()
        self._waiters.clear()
        if workers:
            await asyncio.gather(*(w.aclose(self.deadlines.close) for w in workers))


class InProcessRecognizeStream(RecognizeStream):
    """The stream of :class:`InProcessSTT`: an engine leased per utterance."""

    def __init__(self, stt: InProcessSTT, generation: int) -> None:
        self._stt = stt
        self._worker: EngineWorker[Recognizer] | None = None
        self._rate: int | None = None
        self._queued = 0.0  # seconds of audio pushed and not yet taken by the engine
        super().__init__(
            provider=stt.provider,
            generation=generation,
            owner=stt._tasks,
            close_timeout=stt.deadlines.close,
        )

    @property
    def behind(self) -> bool:
        return self._mailbox.qsize() > 0 or self._worker is not None

    def push_audio(self, frame: AudioFrame) -> None:
        super().push_audio(frame)
        self._queued += frame.duration

    async def _engine(self) -> EngineWorker[Recognizer]:
        if self._worker is None:
            self._worker = await self._stt._lease()
        return self._worker

    async def _release(self, healthy: bool) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            await self._stt._give_back(worker, healthy)

    async def _run(self) -> None:
        stt, dl = self._stt, self._stt.deadlines
        rate = self._rate = stt.engine_rate or stt._rate_seen
        if rate is None:  # the plugin does not know it before loading: ask an engine
            worker = await self._engine()
            rate = self._rate = await worker.call(_start, timeout=dl.connect, stage="load")
            stt._rate_seen = rate
        converter = AudioConverter(rate, 1)
        samples = 0  # samples of the stream so far, at the engine's rate
        utt_start: int | None = None  # where the open utterance began
        utterance = 0
        since_interim = 0
        last_interim = ""
        every = round(stt.interim_interval * rate)

        async def feed(*pcm: bytes) -> None:
            """Feed chunks in one engine call (one call per chunk on the engine)."""
            nonlocal utt_start, samples
            worker = await self._engine()
            if utt_start is None:
                stage = "process" if worker.loaded else "load"  # a new engine loads first
                await worker.call(_restart, timeout=dl.connect, stage=stage)
                utt_start = samples
            await worker.call(_feeder(*pcm), timeout=dl.process, stage="process")
            samples += sum(len(p) for p in pcm) // 2

        async def finish(tail: AudioFrame, *, flush: bool) -> None:
            """End the open utterance; a flush is always answered (``flushed``)."""
            nonlocal utt_start, utterance, last_interim
            if tail.samples_per_channel:
                await feed(tail.data)
            hyp: Hypothesis | None = None
            offset, number = samples / rate, utterance
            if utt_start is not None:
                worker = await self._engine()
                hyp = await worker.call(_finish, timeout=dl.final, stage="final")
                await self._release(True)
                offset = utt_start / rate
                utterance += 1
                utt_start, last_interim = None, ""
            if hyp is not None and hyp.text:
                self._emit(
                    Transcript(
                        hyp.text,
                        True,
                        offset + hyp.start,
                        offset + hyp.end,
                        hyp.confidence,
                        number,
                        self.generation,
                        flushed=flush and not self._flush_pending,
                    )
                )
            elif flush and not self._flush_pending:  # nothing to say: end the wait
                self._emit(Transcript("", True, offset, offset, 0.0, number, self.generation, True))

        async def interim() -> None:
            nonlocal last_interim
            assert utt_start is not None
            worker = await self._engine()
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

        held: object = None
        while True:
            if held is not None:
                item, held = held, None
            else:
                try:
                    item = await self._mailbox.recv()
                except ChannelClosed:
                    return
            if isinstance(item, AudioInput):
                # the audio queued behind it goes in the same engine call (a thread hop
                # per 20 ms frame costs more than the frame, the GIL being contended)
                frames = [item.frame]
                while self._mailbox.qsize() and held is None:
                    nxt = self._mailbox.recv_nowait()
                    if isinstance(nxt, AudioInput):
                        frames.append(nxt.frame)
                    else:
                        held = nxt
                backlog = self._queued
                self._queued -= sum(f.duration for f in frames)
                if backlog > stt.max_backlog:
                    raise ProviderTimeoutError(
                        f"{backlog:.1f} s of audio waited for the engine",
                        provider=stt.provider,
                        stage="backlog",
                        timeout=stt.max_backlog,
                        hint="the engines cannot keep up: the process is over capacity",
                    )
                batch: list[bytes] = []
                for frame in frames:
                    out = converter.process(frame)
                    if not out.samples_per_channel:
                        continue
                    batch.append(out.data)
                    since_interim += out.samples_per_channel
                    if every and since_interim >= every:  # interim results as if unbatched
                        await feed(*batch)
                        batch = []
                        since_interim = 0
                        await interim()
                if batch:
                    await feed(*batch)
            elif isinstance(item, FlushInput):
                self._took_flush()
                await finish(converter.flush(), flush=True)
                since_interim = 0
            elif isinstance(item, EndInput):
                await finish(converter.flush(), flush=False)
                await self._release(True)
                return

    async def _cleanup(self) -> None:
        worker = self._worker
        if worker is None:
            return
        healthy = self.state is not StreamState.FAILED and worker.stuck is None
        try:
            if healthy and worker.usable:
                # ended mid-utterance: reset the engine before reuse (bounded). An engine
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
            await self._release(healthy)


# Engine-thread functions (module level: no closure over loop-side state).
def _start(r: Recognizer) -> int:
    return r.sample_rate


def _restart(r: Recognizer) -> None:
    r.start()


def _feeder(*pcm: bytes) -> Callable[[Recognizer], None]:
    def feed(r: Recognizer) -> None:
        many = getattr(r, "process_many", None)
        if many is not None and len(pcm) > 1:  # one round trip to a child process
            many(list(pcm))
            return
        for chunk in pcm:
            r.process(chunk)

    return feed


def _partial(r: Recognizer) -> Hypothesis | None:
    return r.partial()


def _finish(r: Recognizer) -> Hypothesis | None:
    return r.finish()


def _abandon(r: Recognizer) -> None:
    with contextlib.suppress(Exception):
        r.finish()


# ------------------------------------------------------------ engines in a child process


def _serve_recognizer(
    conn: Any, factory: Callable[..., Recognizer], kwargs: dict[str, Any]
) -> None:
    """The child process: build the recogniser, then answer calls until told to stop."""
    try:
        recognizer = factory(**kwargs)
    except BaseException as exc:  # reported to the parent as the load failure
        conn.send(("err", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ok", recognizer.sample_rate))
    while True:
        try:
            method, args = conn.recv()
        except EOFError:
            return
        if method == "stop":
            recognizer.close()
            conn.send(("ok", None))
            return
        try:
            conn.send(("ok", getattr(recognizer, method)(*args)))
        except Exception as exc:
            conn.send(("err", f"{type(exc).__name__}: {exc}"))


class ChildProcessRecognizer:
    """A :class:`Recognizer` that runs ``factory(**kwargs)`` in a child process.

    For native engines that hold the GIL while they decode (PocketSphinx): on the engine
    thread they take the event loop's interpreter away for the length of each call, so
    every call of a busy server waits; in a child process they run on another core and
    the engine thread only waits on a pipe (without the GIL). Each method is one round
    trip; :meth:`close` stops the child (joined, killed if it does not stop).
    ``factory`` must be picklable (a module-level function or class).
    """

    def __init__(self, factory: Callable[..., Recognizer], **kwargs: Any) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded process
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve_recognizer, args=(child, factory, kwargs), daemon=True
        )
        self._proc.start()
        child.close()
        self.sample_rate = int(self._result())

    def _result(self) -> Any:
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"the engine process failed: {value}")
        return value

    def _call(self, method: str, *args: Any) -> Any:
        self._conn.send((method, args))
        return self._result()

    def start(self) -> None:
        self._call("start")

    def process(self, pcm: bytes) -> None:
        self._call("process", pcm)

    def process_many(self, chunks: list[bytes]) -> None:
        """Several chunks in one round trip (one ``process`` call each in the child)."""
        self._call("process_many", chunks)

    def partial(self) -> Hypothesis | None:
        result: Hypothesis | None = self._call("partial")
        return result

    def finish(self) -> Hypothesis | None:
        result: Hypothesis | None = self._call("finish")
        return result

    def close(self) -> None:
        try:
            if self._proc.is_alive():
                self._call("stop")
        except (OSError, EOFError, RuntimeError):
            pass
        finally:
            self._conn.close()
            self._proc.join(2.0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(2.0)
