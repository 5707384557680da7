"""``OutputTrack``: a bounded buffer of outgoing audio, read as paced fixed-size frames.

A producer (a TTS stream, a realtime model) writes frames of any size; the consumer (a
transport) iterates the track and gets frames of exactly ``frame_duration``, released in
real time on a :class:`~antiphon.aio.clock.Clock`. Barge-in calls :meth:`interrupt`,
which drops everything queued at once; the next frame the consumer gets is new audio.

The track owns no task: pacing happens in the reader, backpressure in the writer. A
reader that is not a task (a transport's send path, see
:class:`~antiphon.transports.base.CallBridge`) uses :meth:`OutputTrack.poll` (or
:meth:`OutputTrack.poll_each`, the bytes of every frame due) and
:meth:`OutputTrack.notify` instead: a frame is taken in a loop callback at its release
time, so it crosses no task between the producer and the sender. Only on a clock other
than the loop's (virtual time in tests) does ``notify`` need a small timer task.

That callback runs for every 20 ms frame of every call, so its path is lean: one clock
read per callback (on the loop ``notify`` last ran in: ``asyncio.get_running_loop`` costs
a ``getpid()`` system call), no frame object for a reader that sends bytes, and a take
updates only the events a shrinking queue can change.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from types import TracebackType

from antiphon.aio.clock import Clock, MonotonicClock
from antiphon.audio.frame import BYTES_PER_SAMPLE, AudioFrame
from antiphon.errors import ConfigError, StreamClosedError

__all__ = ["OutputTrack"]


class OutputTrack:
    """Outgoing audio: ``await write(frame)`` on one side, ``async for frame in track``
    on the other.

    Pacing: frame ``k`` of a run of audio is released at ``start + k * frame_duration``,
    where ``start`` is when the reader first had audio to give. A reader that falls behind
    gets the frames already due at once, and no more. When the reader had to wait for
    audio past a frame's release time (an underrun), pacing starts again from the moment
    audio arrives. No silence is produced unless ``fill_silence=True``: then a frame is
    released at every tick from the first read on, silent when no audio is queued.

    Backpressure: ``write`` waits while ``max_buffered`` seconds or more are queued, so
    queued audio never exceeds ``max_buffered`` plus one write.

    Generations: ``interrupt(generation)`` and writes of a newer generation set the
    current generation; writes of an older one are dropped (counted in
    :attr:`dropped_stale`).

    One producer and one consumer at a time. :meth:`aclose` wakes every waiter at once,
    including a reader sleeping until its next frame's release time.
    """

    def __init__(
        self,
        sample_rate: int,
        channels: int = 1,
        *,
        clock: Clock | None = None,
        frame_duration: float = 0.02,
        max_buffered: float = 2.0,
        fill_silence: bool = False,
    ) -> None:
        if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate <= 0:
            raise ConfigError(f"sample_rate must be a positive int in Hz, got {sample_rate!r}")
        if not isinstance(channels, int) or isinstance(channels, bool) or channels <= 0:
            raise ConfigError(f"channels must be a positive int, got {channels!r}")
        frame_samples = round(frame_duration * sample_rate)
        if frame_samples < 1:
            raise ConfigError(
                f"frame_duration={frame_duration!r} s holds no sample at {sample_rate} Hz; "
                "use e.g. 0.02 (20 ms)"
            )
        if not max_buffered >= frame_samples / sample_rate:
            raise ConfigError(
                f"max_buffered={max_buffered!r} s must be at least one frame "
                f"({frame_duration} s); the default is 2.0"
            )
        self.sample_rate = sample_rate
        self.channels = channels
        self.fill_silence = fill_silence
        #: Called on every frame the reader gets, ``mixer(frame, voiced)`` → the frame to
        #: give (background audio: :mod:`antiphon.agent.sounds`); it must be quick.
        self.mixer: Callable[[AudioFrame, bool], AudioFrame] | None = None
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._loop_clock = type(self._clock) is MonotonicClock  # timers on the loop itself
        self._bytes_per_second = sample_rate * channels * BYTES_PER_SAMPLE
        self._frame_bytes = frame_samples * channels * BYTES_PER_SAMPLE
        #: Exact length of a frame in seconds (``frame_duration`` rounded to whole samples).
        self.frame_duration = frame_samples / sample_rate
        self._max_bytes = round(max_buffered * sample_rate) * channels * BYTES_PER_SAMPLE
        self._silence = bytes(self._frame_bytes)

        # Queued audio: whole written chunks (never copied), the first read from _head.
        self._chunks: deque[tuple[bytes, int]] = deque()
        self._head = 0
        self._queued = 0  # bytes
        self._played = 0  # bytes of written audio handed to the reader

        self._generation = 0
        self._epoch = 0  # counts interrupt() calls without a generation
        self.dropped_stale = 0
        """Writes dropped as stale: an older generation, or blocked across an interrupt."""

        self._closed = False
        self._paused = False
        self._discarded_at_close = 0
        self._draining = 0  # wait_drained() callers; while > 0 the tail is padded out
        self._start: float | None = None
        self._index = 0  # frames released since _start
        self._pacing: asyncio.Future[None] | None = None  # the reader's wake-up, if sleeping
        # poll()/notify(): whether the last poll found no audio (an underrun), when the
        # next frame is due (None: no frame ready), the callback waiting for audio, and
        # the timer (a TimerHandle, or a task on another clock) for a release time
        self._poll_waited = False
        self._poll_due: float | None = None
        self._waker: Callable[[], None] | None = None
        self._wake_timer: asyncio.TimerHandle | asyncio.Task[None] | None = None
        # the loop notify last ran in (asyncio.get_running_loop is a getpid() call)
        self._loop: asyncio.AbstractEventLoop | None = None

        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._empty = asyncio.Event()
        self._update()

    # -- state -------------------------------------------------------------------------

    @property
    def buffered(self) -> float:
        """Seconds of audio queued and not yet handed to the reader."""
        return self._queued / self._bytes_per_second

    @property
    def played(self) -> float:
        """Seconds of written audio handed to the reader (padding not counted)."""
        return self._played / self._bytes_per_second

    @property
    def generation(self) -> int:
        """The current generation; writes of an older one are dropped."""
        return self._generation

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Hold queued audio: the reader gets nothing (or silence) until :meth:`resume`.

        For a possible barge-in that may turn out to be noise; nothing is dropped.
        """
        self._paused = True
        self._update()

    def resume(self) -> None:
        """Release held audio again; pacing restarts from now."""
        self._paused = False
        self._update()

    def _frame_ready(self) -> bool:
        if self._paused:
            return False
        return self._queued >= self._frame_bytes or (self._queued > 0 and self._draining > 0)

    def _update(self) -> None:
        closed = self._closed
        readable = closed or self._frame_ready()
        _set(self._readable, readable)
        if readable and self._waker is not None and self._wake_timer is None:
            waker, self._waker = self._waker, None
            asyncio.get_running_loop().call_soon(waker)
        _set(self._writable, closed or self._queued < self._max_bytes)
        _set(self._empty, closed or self._queued == 0)

    # -- producer ----------------------------------------------------------------------

    async def write(self, frame: AudioFrame) -> None:
        """Queue ``frame``; wait while ``max_buffered`` seconds or more are queued.

        Frames of an older generation than the current one are dropped, as is a write
        still waiting for room when :meth:`interrupt` is called. Raises
        :class:`StreamClosedError` once the track is closed.
        """
        if self._closed:
            raise StreamClosedError("write to a closed OutputTrack")
        if frame.sample_rate != self.sample_rate or frame.channels != self.channels:
            raise ConfigError(
                f"OutputTrack is {self.sample_rate} Hz, {self.channels} ch but got a frame of "
                f"{frame.sample_rate} Hz, {frame.channels} ch; convert it first with "
                f"antiphon.audio.AudioConverter({self.sample_rate}, {self.channels})"
            )
        if frame.generation < self._generation:
            self.dropped_stale += 1
            return
        self._generation = frame.generation
        if not frame.data:
            return
        epoch = self._epoch
        while self._queued >= self._max_bytes:
            await self._writable.wait()
            if self._closed:
                raise StreamClosedError("OutputTrack closed while a write waited for room")
            if self._epoch != epoch or frame.generation < self._generation:
                self.dropped_stale += 1
                return
        self._chunks.append((frame.data, frame.generation))
        before = self._queued
        queued = self._queued = before + len(frame.data)
        if self._waker is not None or self._paused:
            self._update()
        else:  # _update, for a queue that only grew (open: a write to a closed one raised)
            fb, draining = self._frame_bytes, self._draining
            if (queued >= fb or draining) and not (before >= fb or (before and draining)):
                self._readable.set()  # a frame is ready now
            if queued >= self._max_bytes:
                self._writable.clear()
            if not before:
                self._empty.clear()

    def interrupt(self, generation: int | None = None) -> float:
        """Drop all queued audio at once; return how many seconds were dropped.

        With ``generation``, it becomes the current generation, so audio of older ones
        still on its way is dropped when written. Without it, a write waiting for room is
        dropped too (its audio belongs to what was interrupted).
        """
        dropped = self._queued / self._bytes_per_second
        self._chunks = deque()
        self._head = 0
        self._queued = 0
        self._paused = False
        if generation is None:
            self._epoch += 1
        else:
            self._generation = generation
        self._update()
        return dropped

    # -- consumer ----------------------------------------------------------------------

    def _take_frame(self) -> AudioFrame:
        """Pop one frame of queued audio, padding a short tail with silence."""
        data, gen = self._take()
        # whole samples: every chunk is a frame's data, every cut a whole number of them
        return AudioFrame.trusted(data, self.sample_rate, self.channels, gen)

    def _take(self) -> tuple[bytes, int]:
        """:meth:`_take_frame`'s data and generation (called only while a frame is ready).

        The events are updated for what a take can change (the queue only shrinks): a
        frame no longer ready, room again, empty. With a callback waiting for audio,
        :meth:`_update` does it all.
        """
        need = self._frame_bytes
        data, gen = self._chunks[0]
        head = self._head
        end = head + need
        if len(data) >= end:
            out = data[head:end]
            if end == len(data):
                self._chunks.popleft()
                self._head = 0
            else:
                self._head = end
            taken = need
        else:
            parts: list[bytes] = []
            while need and self._chunks:
                data, _ = self._chunks[0]
                piece = data[self._head : self._head + need]
                parts.append(piece)
                need -= len(piece)
                self._head += len(piece)
                if self._head == len(data):
                    self._chunks.popleft()
                    self._head = 0
            if need:
                parts.append(self._silence[:need])
            out = b"".join(parts)
            taken = self._frame_bytes - need
        queued = self._queued - taken
        self._queued = queued
        self._played += taken
        if self._waker is not None:
            self._update()
        else:  # _update, for a queue that only shrank (it was readable, not empty)
            if not (queued >= self._frame_bytes or (queued and self._draining)):
                self._readable.clear()
            if queued + taken >= self._max_bytes > queued:
                self._writable.set()
            if not queued:
                self._empty.set()
        return out, gen

    async def read(self) -> AudioFrame:
        """Return the next frame at its release time.

        With a :attr:`mixer`, the frame is ``mixer(frame, voiced)`` (``voiced``: it holds
        written audio, not silence padding). Raises :class:`StreamClosedError` once the
        track is closed.
        """
        if self.fill_silence:
            frame, voiced = await self._read_filled()
        else:
            frame, voiced = await self._read_paced(), True
        mixer = self.mixer
        return frame if mixer is None else mixer(frame, voiced)

    async def _read_paced(self) -> AudioFrame:
        waited = False
        while True:
            if self._closed:
                raise StreamClosedError("OutputTrack is closed")
            if not self._frame_ready():
                waited = True
                await self._readable.wait()
                continue
            now = self._clock.now()
            if self._start is None or (waited and now > self._due()):
                self._start, self._index = now, 0
            waited = False
            due = self._due()
            if now < due:
                await self._sleep_until(due)
                continue  # closed, interrupted or drained meanwhile? look again
            self._index += 1
            return self._take_frame()

    def poll(self) -> AudioFrame | None:
        """The next frame if it is due now, else ``None`` (then :meth:`notify`).

        The same pacing as :meth:`read` (and the :attr:`mixer`), without waiting: for a
        reader that is a loop callback. Raises :class:`StreamClosedError` once closed.
        """
        if self.fill_silence:
            got = self._poll_filled()
            if got is None:
                return None
            frame, voiced = got
        else:
            if self._closed:
                raise StreamClosedError("OutputTrack is closed")
            pcm = self._poll_paced(self._clock.now())
            if pcm is None:
                return None
            frame = AudioFrame.trusted(pcm[0], self.sample_rate, self.channels, pcm[1])
            voiced = True
        mixer = self.mixer
        return frame if mixer is None else mixer(frame, voiced)

    def poll_each(self, take: Callable[[bytes, int], None]) -> None:
        """Call ``take(data, generation)`` for every frame due now, as :meth:`poll` until
        it gives ``None`` would, with one read of the clock (then :meth:`notify`).

        For a reader that sends the bytes: without a :attr:`mixer`, no frame object is
        made. Raises :class:`StreamClosedError` once closed (also if ``take`` closes it).
        """
        if self.fill_silence or self.mixer is not None:
            while (frame := self.poll()) is not None:
                take(frame.data, frame.generation)
            return
        if self._closed:
            raise StreamClosedError("OutputTrack is closed")
        loop = self._loop
        if self._loop_clock and loop is not None and loop.is_running():
            now = loop.time()  # what the clock reads, without looking the loop up
        else:
            now = self._clock.now()
        while (pcm := self._poll_paced(now)) is not None:
            take(pcm[0], pcm[1])
            if self._closed:
                raise StreamClosedError("OutputTrack is closed")

    def _poll_paced(self, now: float) -> tuple[bytes, int] | None:
        """:meth:`poll` without silence filling, as of ``now`` (the track is open)."""
        queued = self._queued
        if self._paused or not (queued >= self._frame_bytes or (queued and self._draining)):
            self._poll_waited = True
            self._poll_due = None
            return None
        start = self._start
        step = self.frame_duration
        if start is None or (self._poll_waited and now > start + self._index * step):
            self._start = start = now
            self._index = 0
        self._poll_waited = False
        index = self._index
        due = start + index * step
        if now < due:
            self._poll_due = due
            return None
        self._index = index = index + 1
        self._poll_due = start + index * step
        return self._take()

    def _poll_filled(self) -> tuple[AudioFrame, bool] | None:
        if self._closed:
            raise StreamClosedError("OutputTrack is closed")
        now = self._clock.now()
        if self._start is None:
            self._start, self._index = now, 0
        due = self._due()
        if now < due:
            self._poll_due = due
            return None
        self._index += 1
        self._poll_due = self._due()
        if self._frame_ready():
            return self._take_frame(), True
        silence = AudioFrame.trusted(
            self._silence, self.sample_rate, self.channels, self._generation
        )
        return silence, False

    def notify(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, from the loop, when :meth:`poll` may give a frame.

        That is the next frame's release time if a frame is ready (as of the last
        :meth:`poll`), else the moment audio arrives (or the track is resumed or closed).
        One callback at a time: a new one replaces the previous.
        """
        if self._waker is not None or self._wake_timer is not None:
            self.cancel_notify()
        loop = self._loop
        if loop is None or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
        if self._closed:
            loop.call_soon(callback)
        elif self._poll_due is not None and (self.fill_silence or self._frame_ready()):
            when = self._poll_due
            self._waker = callback
            if self._loop_clock:
                self._wake_timer = loop.call_at(when, self._woken)
            else:
                self._wake_timer = loop.create_task(self._wake_at(when))
        elif self._frame_ready():
            loop.call_soon(callback)
        else:
            self._poll_waited = True  # an underrun: pacing restarts when audio comes
            self._waker = callback  # called by _update when audio arrives

    def _woken(self) -> None:
        waker, self._waker, self._wake_timer = self._waker, None, None
        if waker is not None:
            waker()

    async def _wake_at(self, when: float) -> None:
        await self._clock.sleep_until(when)
        self._woken()

    def cancel_notify(self) -> None:
        """Forget the callback given to :meth:`notify`, if it was not called yet."""
        self._waker = None
        timer, self._wake_timer = self._wake_timer, None
        if timer is not None:
            timer.cancel()

    async def _read_filled(self) -> tuple[AudioFrame, bool]:
        if self._closed:
            raise StreamClosedError("OutputTrack is closed")
        if self._start is None:
            self._start, self._index = self._clock.now(), 0
        await self._sleep_until(self._due())
        if self._closed:
            raise StreamClosedError("OutputTrack is closed")
        self._index += 1
        if self._frame_ready():
            return self._take_frame(), True
        silence = AudioFrame.trusted(
            self._silence, self.sample_rate, self.channels, self._generation
        )
        return silence, False

    async def _sleep_until(self, when: float) -> None:
        """Sleep until ``when`` on the clock, or until the track is closed."""
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()
        self._pacing = wake
        try:
            if self._loop_clock:
                # the common case, without a task: a timer on the loop resolves ``wake``
                handle = loop.call_at(when, _resolve, wake)
                try:
                    await wake
                finally:
                    handle.cancel()
            else:
                timer = loop.create_task(self._timer(when, wake))
                try:
                    await wake
                finally:
                    if not timer.done():
                        timer.cancel()
                        await asyncio.wait((timer,))  # raises only if we are cancelled
        finally:
            self._pacing = None

    async def _timer(self, when: float, wake: asyncio.Future[None]) -> None:
        await self._clock.sleep_until(when)
        _resolve(wake)

    def _due(self) -> float:
        assert self._start is not None
        return self._start + self._index * self.frame_duration

    def __aiter__(self) -> OutputTrack:
        return self

    async def __anext__(self) -> AudioFrame:
        try:
            return await self.read()
        except StreamClosedError:
            raise StopAsyncIteration from None

    # -- ending ------------------------------------------------------------------------

    async def wait_drained(self, timeout: float | None = None) -> bool:
        """Wait until the reader has taken everything written; False on timeout or close.

        While someone waits here, a last partial frame is released padded with silence.
        ``timeout`` is measured on the track's clock. After :meth:`interrupt` there is
        nothing left to play, so this returns True.
        """
        if self._closed:
            return self._discarded_at_close == 0
        if self._queued == 0:
            return True
        self._draining += 1
        self._update()
        try:
            if timeout is None:
                await self._empty.wait()
            else:
                await self._wait_empty_until(self._clock.now() + timeout)
        finally:
            self._draining -= 1
            self._update()
        if self._closed:
            return self._discarded_at_close == 0
        return self._queued == 0

    async def _wait_empty_until(self, deadline: float) -> None:
        empty = asyncio.ensure_future(self._empty.wait())
        timer = asyncio.ensure_future(self._clock.sleep_until(deadline))
        try:
            await asyncio.wait((empty, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            empty.cancel()
            timer.cancel()
            await asyncio.gather(empty, timer, return_exceptions=True)

    async def aclose(self) -> None:
        """Close the track, dropping queued audio; idempotent.

        Waiting readers end (``StopAsyncIteration`` / :class:`StreamClosedError`), waiting
        writers raise :class:`StreamClosedError`, waiting ``wait_drained`` calls return.
        For a graceful end, ``await wait_drained(timeout)`` first.
        """
        if self._closed:
            return
        self._closed = True
        self._discarded_at_close = self._queued
        self._chunks = deque()
        self._head = 0
        self._queued = 0
        waker = self._waker
        self.cancel_notify()
        self._update()
        if waker is not None:
            asyncio.get_running_loop().call_soon(waker)
        if self._pacing is not None:
            _resolve(self._pacing)

    async def __aenter__(self) -> OutputTrack:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _set(event: asyncio.Event, value: bool) -> None:
    if value:
        event.set()
    else:
        event.clear()
