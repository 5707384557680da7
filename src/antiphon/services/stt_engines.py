"""In-process STT engines: :class:`InProcessSTT` over blocking :class:`Recognizer`s.

Split from :mod:`antiphon.services.stt`, which re-exports every name here. Each
recogniser runs on a dedicated :class:`EngineWorker` thread that the plugin owns and
joins (DESIGN rule 3); engines live in a bounded pool and are leased to a stream for one
utterance, so a few engines serve many calls. :class:`InProcessRecognizeStream` drives
its engine with the module-level engine-thread functions at the bottom (no closure over
loop-side state), sending the audio queued behind a frame in the same thread hop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

from antiphon.aio.channel import ChannelClosed
from antiphon.aio.worker import ThreadWorker
from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter
from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError, StreamClosedError
from antiphon.services.stt_contract import (
    STT,
    AudioInput,
    EndInput,
    FlushInput,
    RecognizeStream,
    StreamState,
    STTDeadlines,
    Transcript,
)

__all__ = [
    "EngineWorker",
    "Hypothesis",
    "InProcessRecognizeStream",
    "InProcessSTT",
    "Recognizer",
]


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
