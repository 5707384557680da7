"""OutputTrack: paced 20 ms frames on a virtual clock, backpressure, interruption."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from antiphon.aio import VirtualClock
from antiphon.audio.frame import AudioFrame
from antiphon.audio.track import OutputTrack
from antiphon.errors import ConfigError, StreamClosedError

#: asyncio only: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time

RATE = 16000
FRAME = 320  # samples in 20 ms at 16 kHz


async def settle(rounds: int = 10) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def advance_to(clock: VirtualClock, t: float) -> None:
    """Move to virtual time ``t`` (a hair past it, to absorb float rounding)."""
    await clock.advance(max(0.0, t + 1e-9 - clock.now()))


def ramp(start: int, n: int, generation: int = 0) -> AudioFrame:
    """``n`` samples counting up from ``start`` (wrapping in int16): easy to trace."""
    data = ((np.arange(start, start + n) % 30000) + 1).astype(np.int16)
    return AudioFrame.from_array(data, RATE, generation=generation)


class Collector:
    """Reads a track in a task, noting each frame and the virtual time it arrived."""

    def __init__(self, track: OutputTrack, clock: VirtualClock) -> None:
        self.frames: list[AudioFrame] = []
        self.times: list[float] = []
        self.ended = False
        self._track = track
        self._clock = clock
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for frame in self._track:
            self.frames.append(frame)
            self.times.append(self._clock.now())
        self.ended = True

    def samples(self) -> np.ndarray:
        return np.concatenate([f.as_array() for f in self.frames])


async def test_frames_are_20ms_and_released_on_time() -> None:
    clock = VirtualClock()
    track = OutputTrack(RATE, clock=clock)
    await track.write(ramp(0, 5 * FRAME))
    reader = Collector(track, clock)
    await settle()
    assert reader.times == [0.0]  # first frame as soon as there is audio
    for k in range(1, 5):
        await advance_to(clock, k * 0.02 - 0.001)
        assert len(reader.frames) == k  # not a moment early
        await advance_to(clock, k * 0.02)
        assert len(reader.frames) == k + 1
    assert reader.times == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08])
    assert all(f.samples_per_channel == FRAME and f.duration == 0.02 for f in reader.frames)
    assert track.played == pytest.approx(0.1)
    assert track.buffered == 0
    # the buffer ran empty: nothing (no silence) until audio comes again, then at once
    await advance_to(clock, 1.0)
    assert len(reader.frames) == 5
    await track.write(ramp(0, 2 * FRAME))
    await settle()
    assert reader.times[5:] == pytest.approx([1.0])
    await advance_to(clock, 1.02)
    assert reader.times[5:] == pytest.approx([1.0, 1.02])
    await track.aclose()
    await reader.task
    assert reader.ended


async def test_late_reader_catches_up_without_running_ahead() -> None:
    clock = VirtualClock()
    track = OutputTrack(RATE, clock=clock)
    await track.write(ramp(0, 6 * FRAME))
    await track.read()  # frame 0 at t=0
    await advance_to(clock, 0.07)  # the consumer was busy: frames 1-3 are due
    for _ in range(3):
        await asyncio.wait_for(track.read(), timeout=1)  # real timeout: must not block
    nxt = asyncio.create_task(track.read())  # frame 4 is due at 0.08, not before
    await settle()
    assert not nxt.done()
    await advance_to(clock, 0.08)
    assert nxt.done()
    assert clock.now() == pytest.approx(0.08)
    await track.aclose()


async def test_underrun_restarts_pacing_when_audio_arrives() -> None:
    clock = VirtualClock()
    track = OutputTrack(RATE, clock=clock)
    reader = Collector(track, clock)
    await track.write(ramp(0, FRAME))
    await settle()
    await advance_to(clock, 0.01)
    await track.write(ramp(FRAME, FRAME))  # arrives before its slot at 0.02: kept on time
    await settle()
    assert len(reader.frames) == 1
    await advance_to(clock, 0.02)
    assert reader.times == pytest.approx([0.0, 0.02])
    await advance_to(clock, 0.05)  # slot 0.04 passed with nothing to play
    await track.write(ramp(0, 2 * FRAME))
    await settle()
    await advance_to(clock, 0.07)
    assert reader.times == pytest.approx([0.0, 0.02, 0.05, 0.07])
    await track.aclose()
    await reader.task


async def test_odd_sized_writes_are_rechunked_exactly() -> None:
    clock = VirtualClock()
    track = OutputTrack(RATE, clock=clock, max_buffered=10.0)
    sizes = [1, 7, 333, 319, 320, 321, 1000, 2, 4799, 50]
    written = []
    pos = 0
    for n in sizes:
        frame = ramp(pos, n)
        written.append(frame.as_array())
        await track.write(frame)
        pos += n
    total = sum(sizes)
    assert track.buffered == pytest.approx(total / RATE)
    reader = Collector(track, clock)
    drained = asyncio.create_task(track.wait_drained())
    while not drained.done():
        await clock.advance(0.02)
    assert drained.result() is True
    n_frames = -(-total // FRAME)
    assert len(reader.frames) == n_frames
    assert all(f.samples_per_channel == FRAME for f in reader.frames)
    expected = np.concatenate([*written, np.zeros(n_frames * FRAME - total, np.int16)])
    assert np.array_equal(reader.samples(), expected)
    assert track.played == pytest.approx(total / RATE)  # padding is not counted
    await track.aclose()
    await reader.task


async def test_interrupt_drops_everything_and_returns_seconds_dropped() -> None:
    clock = VirtualClock()
    track = OutputTrack(RATE, clock=clock)
    await track.write(ramp(0, RATE))  # 1 s in one chunk
    await track.write(ramp(RATE, RATE // 2))
    first = await track.read()
    assert first.as_array()[0] == 1
    assert track.buffered == pytest.approx(1.48)
    assert track.interrupt() == pytest.approx(1.48)
    assert track.buffered == 0
    assert track.interrupt() == 0.0
    pending = asyncio.create_task(track.read())
    await advance_to(clock, 0.1)
    assert not pending.done()  # nothing of the old audio comes out
    await track.write(ramp(20000, FRAME))
    new = await asyncio.wait_for(pending, timeout=1)
    assert new.as_array()[0] == 20001
    assert track.played == pytest.approx(0.04)
    await track.aclose()


async def test_interrupt_unblocks_a_writer_waiting_for_room() -> None:
    clock = VirtualClock()
    track = OutputTrack(RATE, clock=clock, max_buffered=0.1)
    await track.write(ramp(0, 5 * FRAME))  # exactly max_buffered
    blocked = asyncio.create_task(track.write(ramp(0, FRAME)))
    await settle()
    assert not blocked.done()
    assert track.interrupt() == pytest.approx(0.1)
    await asyncio.wait_for(blocked, timeout=1)
    # its audio belonged to the interrupted utterance: dropped, not queued
    assert track.buffered == 0
    assert track.dropped_stale == 1
    await track.aclose()


async def test_interrupt_with_generation_keeps_a_waiting_write_of_that_generation() -> None:
    clock = VirtualClock()
    track = OutputTrack(RATE, clock=clock, max_buffered=0.1)
    await track.write(ramp(0, 5 * FRAME, generation=1))
    old = asyncio.create_task(track.write(ramp(0, FRAME, generation=1)))
    new = asyncio.create_task(track.write(ramp(7, FRAME, generation=2)))
    await settle()
    assert not old.done()
    assert not new.done()
    track.interrupt(generation=2)
    await asyncio.wait_for(asyncio.gather(old, new), timeout=1)
    assert track.dropped_stale == 1
    assert track.buffered == pytest.approx(0.02)
    frame = await track.read()
    assert frame.generation == 2
    assert frame.as_array()[0] == 8
    await track.aclose()


async def test_generation_filter() -> None:
    clock = VirtualClock()
    track = OutputTrack(RATE, clock=clock)
    await track.write(ramp(0, FRAME, generation=1))
    assert track.interrupt(generation=3) == pytest.approx(0.02)
    assert track.generation == 3
    await track.write(ramp(0, FRAME, generation=2))  # on the wire when the user interrupted
    assert track.buffered == 0
    assert track.dropped_stale == 1
    await track.write(ramp(100, FRAME, generation=3))
    await track.write(ramp(0, FRAME, generation=4))  # a newer turn moves the generation on
    assert track.generation == 4
    await track.write(ramp(0, FRAME, generation=3))
    assert track.dropped_stale == 2
    assert track.buffered == pytest.approx(0.04)
    got = [await track.read(), await asyncio.wait_for(_read_at(track, clock, 0.02), 1)]
    assert [f.generation for f in got] == [3, 4]
    assert got[0].as_array()[0] == 101
    await track.aclose()


async def _read_at(track: OutputTrack, clock: VirtualClock, t: float) -> AudioFrame:
    task = asyncio.create_task(track.read())
    await settle()
    await advance_to(clock, t)
    return await task


async def test_memory_is_bounded_by_backpressure() -> None:
    clock = VirtualClock()
    track = OutputTrack(RATE, clock=clock, max_buffered=0.2)
    chunk = 480  # 30 ms writes
    peak = 0.0
    blocked_once = False
    sent: list[np.ndarray] = []

    async def produce() -> None:
        nonlocal peak
        for i in range(40):
            frame = ramp(i * chunk, chunk)
            sent.append(frame.as_array())
            await track.write(frame)
            peak = max(peak, track.buffered)

    producer = asyncio.create_task(produce())
    await settle()
    assert not producer.done()  # blocked on a full buffer with no reader
    assert track.buffered < 0.2 + chunk / RATE
    assert track.buffered >= 0.2
    blocked_once = True
    reader = Collector(track, clock)
    while not producer.done():
        await clock.advance(0.02)
        peak = max(peak, track.buffered)
    assert blocked_once
    assert peak <= 0.2 + chunk / RATE
    assert await _drain(track, clock)
    assert np.array_equal(reader.samples(), np.concatenate(sent))  # 40*480 = 60 frames
    await track.aclose()
    await reader.task


async def _drain(track: OutputTrack, clock: VirtualClock) -> bool:
    task = asyncio.create_task(track.wait_drained())
    await settle()
    while not task.done():
        await clock.advance(0.02)
    return task.result()


async def test_wait_drained() -> None:
    clock = VirtualClock()
    track = OutputTrack(RATE, clock=clock)
    assert await track.wait_drained(timeout=0) is True  # nothing written
    await track.write(ramp(0, 2 * FRAME + 100))
    waiter = asyncio.create_task(track.wait_drained(timeout=0.1))
    await settle()
    await advance_to(clock, 0.099)
    assert not waiter.done()
    await advance_to(clock, 0.1)
    await settle()
    assert waiter.done()
    assert waiter.result() is False  # no one reads
    assert clock.sleepers == 0  # the timer was cleaned up
    reader = Collector(track, clock)
    waiter = asyncio.create_task(track.wait_drained(timeout=1.0))
    await settle()
    await advance_to(clock, 0.14)
    assert waiter.done()
    assert waiter.result() is True
    assert len(reader.frames) == 3  # the 100-sample tail, padded, was released at 0.14
    assert reader.frames[2].as_array()[100:].tolist() == [0] * (FRAME - 100)
    assert clock.sleepers == 0  # drain timer cancelled; the reader waits for audio, not time
    await track.aclose()
    await reader.task


async def test_wait_drained_with_real_timeout_and_after_interrupt() -> None:
    track = OutputTrack(RATE)  # the real monotonic clock
    await track.write(ramp(0, FRAME))
    assert await track.wait_drained(timeout=0.01) is False
    waiter = asyncio.create_task(track.wait_drained())
    await settle()
    track.interrupt()
    assert await asyncio.wait_for(waiter, timeout=1) is True
    await track.aclose()


async def test_aclose_wakes_reader_writer_and_drain_waiter() -> None:
    clock = VirtualClock()
    idle = OutputTrack(RATE, clock=clock)
    reader = Collector(idle, clock)
    full = OutputTrack(RATE, clock=clock, max_buffered=0.02)
    await full.write(ramp(0, FRAME))
    writer = asyncio.create_task(full.write(ramp(0, FRAME)))
    drain = asyncio.create_task(full.wait_drained())
    await settle()
    assert not (reader.task.done() or writer.done() or drain.done())
    await idle.aclose()
    await full.aclose()
    await full.aclose()  # idempotent
    await asyncio.wait_for(reader.task, timeout=1)
    assert reader.ended
    with pytest.raises(StreamClosedError):
        await asyncio.wait_for(writer, timeout=1)
    assert await asyncio.wait_for(drain, timeout=1) is False  # audio was discarded
    assert await full.wait_drained() is False
    assert await idle.wait_drained() is True
    with pytest.raises(StreamClosedError):
        await full.write(ramp(0, FRAME))
    with pytest.raises(StreamClosedError):
        await full.read()
    assert full.buffered == 0
    assert clock.sleepers == 0
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_close_wakes_a_reader_waiting_for_its_release_time() -> None:
    clock = VirtualClock()
    async with OutputTrack(RATE, clock=clock) as track:
        await track.write(ramp(0, 3 * FRAME))
        reader = Collector(track, clock)
        await settle()
        assert len(reader.frames) == 1
        assert clock.sleepers == 1  # waiting for 0.02
    assert track.closed
    await asyncio.wait_for(reader.task, timeout=1)  # without moving the clock
    assert clock.sleepers == 0
    assert reader.ended
    assert len(reader.frames) == 1  # the queued audio was dropped, not played


async def test_fill_silence_keeps_a_continuous_stream() -> None:
    clock = VirtualClock()
    track = OutputTrack(RATE, clock=clock, fill_silence=True)
    reader = Collector(track, clock)
    await settle()
    await advance_to(clock, 0.04)
    await track.write(ramp(0, FRAME + 10))
    for t in (0.06, 0.08, 0.10):
        await advance_to(clock, t)
    assert reader.times == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08, 0.10])
    silent = [not f.as_array().any() for f in reader.frames]
    # audio written at 0.04 went out in the 0.04 slot; the 10-sample tail waits for more
    assert silent == [True, True, True, False, True, True]
    assert track.buffered == pytest.approx(10 / RATE)
    await track.aclose()
    await reader.task


async def test_format_and_configuration_errors() -> None:
    track = OutputTrack(RATE, clock=VirtualClock())
    with pytest.raises(ConfigError, match=r"48000 Hz.*AudioConverter\(16000, 1\)"):
        await track.write(AudioFrame.silence(0.02, 48000))
    with pytest.raises(ConfigError, match="2 ch"):
        await track.write(AudioFrame.silence(0.02, RATE, channels=2))
    with pytest.raises(ConfigError, match="frame_duration"):
        OutputTrack(RATE, frame_duration=0.00001)
    with pytest.raises(ConfigError, match="max_buffered"):
        OutputTrack(RATE, max_buffered=0.01)
    with pytest.raises(ConfigError, match="sample_rate"):
        OutputTrack(0)
    await track.aclose()


async def test_stereo_and_non_integral_frame_length() -> None:
    clock = VirtualClock()
    track = OutputTrack(11025, 2, clock=clock)
    assert track.frame_duration == pytest.approx(220 / 11025)
    data = np.arange(2 * 500, dtype=np.int16).reshape(500, 2)
    await track.write(AudioFrame.from_array(data, 11025))
    reader = Collector(track, clock)
    assert await _drain(track, clock)
    assert [f.samples_per_channel for f in reader.frames] == [220, 220, 220]
    out = np.concatenate([f.as_array() for f in reader.frames])
    assert np.array_equal(out[:500], data)
    assert not out[500:].any()
    assert reader.times == pytest.approx([0.0, 220 / 11025, 440 / 11025])
    await track.aclose()
    await reader.task


async def test_cancelled_reader_and_drain_waiter_leave_no_task_behind() -> None:
    clock = VirtualClock()
    track = OutputTrack(RATE, clock=clock)
    await track.write(ramp(0, 3 * FRAME))
    await track.read()
    reader = asyncio.create_task(track.read())  # sleeps until 0.02
    drain = asyncio.create_task(track.wait_drained(timeout=5))
    await settle()
    assert clock.sleepers == 2
    reader.cancel()
    drain.cancel()
    for task in (reader, drain):
        with pytest.raises(asyncio.CancelledError):
            await task
    await settle()
    assert clock.sleepers == 0
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert track.buffered == pytest.approx(0.04)  # nothing was lost by the cancellation
    await track.aclose()


async def test_real_clock_pacing_works_end_to_end() -> None:
    track = OutputTrack(RATE, max_buffered=0.1)
    frames: list[AudioFrame] = []

    async def consume() -> None:
        async for frame in track:
            frames.append(frame)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(consume())
        for i in range(4):
            await track.write(ramp(i * 250, 250))  # 1000 samples: 3 frames and a tail
        assert await track.wait_drained(timeout=5)
        await track.aclose()
    assert len(frames) == 4
    assert track.played == pytest.approx(1000 / RATE)


async def test_pause_holds_audio_and_resume_continues_where_it_stopped() -> None:
    clock = VirtualClock()
    track = OutputTrack(RATE, clock=clock)
    await track.write(ramp(0, 6 * FRAME))
    reader = Collector(track, clock)
    await settle()
    await advance_to(clock, 0.02)
    assert len(reader.frames) == 2
    track.pause()
    assert track.paused
    await advance_to(clock, 0.5)
    assert len(reader.frames) == 2  # nothing released, nothing dropped
    assert track.buffered == pytest.approx(4 * 0.02)
    track.resume()
    await settle()
    assert reader.times[2] == pytest.approx(0.5)  # pacing restarts from the resume
    await advance_to(clock, 0.56)
    assert len(reader.frames) == 6
    assert np.array_equal(reader.samples(), ramp(0, 6 * FRAME).as_array())  # in order, whole
    await track.aclose()
    await reader.task


async def test_pause_with_fill_silence_gives_silence_and_interrupt_unpauses() -> None:
    clock = VirtualClock()
    track = OutputTrack(RATE, clock=clock, fill_silence=True)
    await track.write(ramp(0, 4 * FRAME))
    reader = Collector(track, clock)
    await settle()
    track.pause()
    await advance_to(clock, 0.06)
    assert [int(f.as_array().any()) for f in reader.frames] == [1, 0, 0, 0]
    assert track.interrupt() == pytest.approx(3 * 0.02)
    assert not track.paused
    await track.aclose()
    await reader.task


async def test_the_events_follow_the_queue_through_writes_takes_and_pauses() -> None:
    """Writes and takes update the events for what they can change; each step is checked
    against the full rule (readable: a frame ready; writable: room; empty: nothing queued)."""
    clock = VirtualClock()
    track = OutputTrack(RATE, clock=clock, max_buffered=0.1)
    rng = np.random.default_rng(7)

    def check() -> None:
        q = track.buffered * RATE * 2
        ready = not track.paused and (q >= 2 * FRAME or (q > 0 and track._draining > 0))
        assert track._readable.is_set() == ready
        assert track._writable.is_set() == (q < 0.1 * RATE * 2)
        assert track._empty.is_set() == (q == 0)

    sizes = [FRAME // 4, FRAME // 2, FRAME, 3 * FRAME // 2, 2 * FRAME]
    drain: asyncio.Task[bool] | None = None
    for step in range(400):
        action = rng.integers(0, 6)
        if action <= 1 and track.buffered < 0.1:
            await track.write(ramp(step, sizes[rng.integers(0, len(sizes))]))
        elif action == 2:
            await clock.advance(0.02)
            track.poll_each(lambda data, generation: None)
        elif action == 3:
            track.pause() if not track.paused else track.resume()
        elif action == 4 and drain is None and track.buffered > 0:
            drain = asyncio.create_task(track.wait_drained())
            await asyncio.sleep(0)  # the tail is padded out while it waits
        elif action == 5 and step % 7 == 0:
            track.interrupt()
        if drain is not None and drain.done():
            drain.result()  # True, or False if audio came in before it looked again
            drain = None
        check()
    if drain is not None:
        track.resume()
        await clock.advance(1.0)
        track.poll_each(lambda data, generation: None)
        await clock.advance(1.0)
        track.poll_each(lambda data, generation: None)
        await asyncio.wait_for(drain, 1)
    await track.aclose()
